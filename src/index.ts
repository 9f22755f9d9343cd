/** rxshuttle's public API. */
export { connect } from './connect.js';
export * from './errors.js';
export type { TunnelEvent, TunnelEventKind } from './events.js';
export type { SubnetRule } from './firewall/types.js';
export { parseListen, parseRemote, parseSubnet, type ListenSpec, type RemoteSpec, type TunnelOptions } from './options.js';
export type { Destination } from './streams/frame.js';
