/** rxshuttle's public API. */
export { connect } from './connect.js';
export type { SubnetRule } from './firewall/types.js';
export * from './shared/errors.js';
export type { TunnelEvent, TunnelEventKind } from './shared/events.js';
export {
  type ConnectOptions,
  type ListenSpec,
  type NamedSubnet,
  parseListen,
  parseRemote,
  parseSubnet,
  parseSubnetOrName,
  type RemoteSpec,
  type TunnelOptions,
} from './shared/options.js';
export type { StatusSnapshot, TunnelState } from './status/snapshot.js';
export { reduceStatus, STOPPING, statusTracker, tunnelStatus } from './status/snapshot.js';
export type { Destination } from './streams/frame.js';
