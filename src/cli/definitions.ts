/**
 * The command line as data: every option once, with its group, its help line, its longer text
 * for the man page and what its value is (for shell completion). `--help` (program.ts), the man
 * page (man.ts) and the bash and zsh completion (completion.ts) are all made from a CliSpec, so
 * an option added here shows in all three; each generator takes the spec as an argument, which
 * lets a test add one without touching this file.
 */
import { DEFAULT_KEEPALIVE, DEFAULT_LISTEN_PORT, METHODS, TRANSPORTS } from '../shared/options.js';
import { DEFAULT_PIDFILE } from './pidfile.js';

/** Help groups, in the order --help and the man page show them. */
export const GROUPS = ['tunnel', 'names', 'ssh', 'running', 'privileges'] as const;
export type Group = (typeof GROUPS)[number];

export const GROUP_TITLES: { readonly [G in Group]: string } = {
  tunnel: 'Tunnel',
  names: 'Names and routes',
  ssh: 'ssh',
  running: 'Running it',
  privileges: 'Privileges',
};

/**
 * What an option's value is, for completion: a file, a host (ssh's), a command, a local user, one
 * of `choices`, or something no shell can guess (an address, a number).
 */
export type ValueKind = 'file' | 'host' | 'command' | 'user' | 'group' | 'choice' | 'text';

export interface OptionDef {
  /** As commander spells them: `-r, --remote <[user@]host[:port]>`, `--no-reconnect`. */
  readonly flags: string;
  /** One line for --help. */
  readonly help: string;
  /** A paragraph for the man page; absent: `help`. */
  readonly man?: string;
  readonly group: Group;
  readonly value?: ValueKind;
  readonly choices?: readonly string[];
  readonly default?: string;
  /** Given more than once, the values add up (-x, -s, -X). */
  readonly repeatable?: boolean;
  /** Counts how often it is given (-v, -vv). */
  readonly counter?: boolean;
  /** The built-in -h or -V: commander's own, placed in a group. */
  readonly builtin?: 'help' | 'version';
  /** Internal or kept for compatibility: in no help, man page or completion. */
  readonly hidden?: boolean;
}

export interface CommandDef {
  readonly name: string;
  /** `<shell>`, with its choices; none for a command without one (`status`). */
  readonly argument?: string;
  readonly choices?: readonly string[];
  readonly help: string;
  /** Options of the command itself (`status --json`). */
  readonly options?: readonly { readonly flags: string; readonly help: string }[];
}

export interface Example {
  readonly command: string;
  readonly comment: string;
}

export interface CliSpec {
  readonly name: string;
  /** What it is, in one line (the man page's NAME, the first line of --help). */
  readonly summary: string;
  readonly usage: string;
  readonly argument: { readonly name: string; readonly help: string; readonly man: string };
  readonly options: readonly OptionDef[];
  readonly commands: readonly CommandDef[];
  /** Paragraphs for the man page's DESCRIPTION. */
  readonly description: readonly string[];
  /** Where arguments come from besides the command line (@FILE, the environment): help and man. */
  readonly sources: readonly { readonly term: string; readonly help: string; readonly text: string }[];
  readonly examples: readonly Example[];
  /** Exit statuses and what they mean (man page). */
  readonly exitStatus: readonly { readonly code: number; readonly text: string }[];
  /** Other manual pages (man page's SEE ALSO): `ssh(1)`. */
  readonly seeAlso: readonly string[];
}

/** Environment variables whose words go in front of the command line (argv.ts). */
export const ARGS_ENV = 'RXSHUTTLE_ARGS';
export const SSHUTTLE_ARGS_ENV = 'SSHUTTLE_ARGS';

/** Internal: the re-spawned daemon (daemon.ts DAEMON_CHILD_FLAG). */
const DAEMON_CHILD = '--internal-daemon-child';

export const CLI_SPEC: CliSpec = {
  name: 'rxshuttle',
  summary: 'transparent-proxy VPN over ssh',
  usage: '[options] [-r [user@]host[:port]] <subnets...>',
  argument: {
    name: '[subnets...]',
    help: 'what to tunnel: a.b.c.d[/width][:port[-port]], 0/0, 10/8, [ipv6][/width], host.name[:port[-port]]',
    man:
      'The subnets to tunnel: a.b.c.d[/width][:port[-port]] (1.2.3.4 is 1.2.3.4/32, 10/8 is 10.0.0.0/8, ' +
      '0/0 is everything), or IPv6 as [addr][/width][:port[-port]] or a bare addr[/width]. Host bits are ' +
      'cleared: 10.98.0.7/24 means 10.98.0.0/24. A host name (wiki.corp, wiki.corp:443) is resolved by the ' +
      "remote's resolver once connected (A, and AAAA when IPv6 can be listened on), asked again when its " +
      'TTL runs out (at least 10 s apart, at most an hour), and its rules follow its addresses; a name ' +
      'that does not resolve at the start is an error. Names work with -x, -s and -X too.',
  },
  options: [
    // Tunnel
    {
      flags: '-r, --remote <[user@]host[:port]>',
      help: 'the ssh server to tunnel through (default: a local server, as root)',
      man:
        'The ssh server, as ssh takes it (aliases and settings of ~/.ssh/config apply). Without it the ' +
        'server runs on this machine (local mode), which needs root.',
      group: 'tunnel',
      value: 'host',
    },
    {
      flags: '-l, --listen <[ip:]port[,...]>',
      help: `proxy address(es), comma-separated (default 127.0.0.1, a free port from ${DEFAULT_LISTEN_PORT})`,
      man:
        `Where the transparent proxy listens. Default: 127.0.0.1 and the first free port from ${DEFAULT_LISTEN_PORT} ` +
        '(plus ::1 when IPv6 subnets are tunneled). A bare port means 127.0.0.1, a bare address (or localhost) ' +
        'port 0, the first free port. IPv6 goes in brackets: [::1]:0. Several addresses, comma-separated, listen ' +
        'at once on one port (the rules redirect to one): -l 127.0.0.1:0,[::1]:0. An address beyond loopback ' +
        '(0.0.0.0:0) also catches traffic this machine forwards (router mode). The rules hand this machine\'s own ' +
        'connections to 127.0.0.1 (::1) whatever the address, so it is listened on too when -l does not cover it; ' +
        'the rules are per port: a second rxshuttle on the same port with another address fails at once.',
      group: 'tunnel',
      value: 'text',
    },
    {
      flags: '-x, --exclude <subnet>',
      help: 'never tunnel this subnet (repeatable; the longest prefix wins)',
      man: 'Never tunnel this subnet; repeatable. Between subnets and excludes the longest prefix wins: 0/0 -x 10.9.0.0/16.',
      group: 'tunnel',
      value: 'text',
      repeatable: true,
    },
    {
      flags: '-X, --exclude-from <file>',
      help: 'exclude the subnets listed in a file, one per line (# comments)',
      man: 'Exclude the subnets listed in a file, one per line; blank lines and # comments are skipped. Repeatable.',
      group: 'tunnel',
      value: 'file',
      repeatable: true,
    },
    {
      flags: '-s, --subnets <file>',
      help: 'tunnel the subnets listed in a file, one per line (# comments)',
      man:
        'Tunnel the subnets listed in a file, one per line, as if given on the command line; blank lines and ' +
        '# comments are skipped. Repeatable.',
      group: 'tunnel',
      value: 'file',
      repeatable: true,
    },
    {
      flags: '--keepalive <seconds>',
      help: `ping the server this often (default ${DEFAULT_KEEPALIVE}, 0: never); 4 silent intervals end the session`,
      man:
        'Ping the server this often; after 4 intervals without an answer the session counts as lost. With ssh2 ' +
        "the pings are also ssh's own keepalive requests. 0: never.",
      group: 'tunnel',
      value: 'text',
      default: String(DEFAULT_KEEPALIVE),
    },
    {
      flags: '--no-reconnect',
      help: 'end the tunnel when its session is lost (by default a session that was up is started again, the rules staying)',
      group: 'tunnel',
    },
    {
      flags: '--no-latency-control',
      help: 'favour bulk throughput over interactive latency',
      man:
        "Favour bulk throughput over interactive latency: with ssh2, each connection's receive window is ssh2's " +
        '2 MiB topped up on arrival instead of 512 KiB returned as the local program reads.',
      group: 'tunnel',
    },
    // Names and routes
    {
      flags: '--dns',
      help: 'capture local DNS queries (to the nameservers in /etc/resolv.conf) and answer them remotely',
      man:
        'Capture local DNS queries (UDP and TCP port 53 to the nameservers of /etc/resolv.conf) and resolve them ' +
        "with the remote host's resolver.",
      group: 'names',
    },
    {
      flags: '--ns-hosts <ip,...>',
      help: 'capture DNS queries to these nameservers instead (implies --dns)',
      group: 'names',
      value: 'text',
    },
    {
      flags: '--to-ns <ip[:port]>',
      help: 'the remote nameserver that answers them (default: the remote /etc/resolv.conf)',
      group: 'names',
      value: 'text',
    },
    {
      flags: '-N, --auto-nets',
      help: "also tunnel the networks in the server's routing table",
      man:
        "Also tunnel the networks in the server's routing table, without its default route, routes wider than " +
        '/8 (IPv4) or /16 (IPv6), what -x excludes and the ssh server itself; then subnets may be left out.',
      group: 'names',
    },
    {
      flags: '--auto-nets-wide',
      help: 'with -N: also tunnel routes wider than /8 (IPv4) or /16 (IPv6) that the server names',
      group: 'names',
    },
    {
      flags: '-H, --auto-hosts',
      help: "add the names of the server's hosts to /etc/hosts while the tunnel runs",
      group: 'names',
    },
    {
      flags: '--seed-hosts <name,...>',
      help: 'with -H: host names to start discovery from',
      group: 'names',
      value: 'text',
    },
    {
      flags: '--hostwatch',
      help: 'for debugging -H: discover host names here, as the server would, and print them',
      group: 'names',
    },
    // ssh
    {
      flags: '-e, --ssh-cmd <command>',
      help: 'the ssh command to use, with its options (default ssh)',
      man: "The ssh command, with its options, split as a shell would: -e 'ssh -F ~/.ssh/other_config -i key'.",
      group: 'ssh',
      value: 'command',
      default: 'ssh',
    },
    {
      flags: '--transport <auto|ssh|ssh2>',
      help: 'ssh2: in-process ssh (faster; keys and agent only); ssh: the ssh binary; auto (default): ssh2 when it can',
      man:
        'Who speaks ssh. ssh2: rxshuttle itself, configured by ssh -G, with the agent or an unencrypted key; TCP ' +
        'goes in ssh channels. ssh: the ssh binary, so all of your ssh config, passwords and prompts work. auto ' +
        '(default): ssh2 when it can, else the binary (a proxy in the config, no usable key, an unknown host key).',
      group: 'ssh',
      value: 'choice',
      choices: TRANSPORTS,
      default: 'auto',
    },
    {
      flags: '--ssh-forward',
      help: 'hand each TCP connection to ssh (OpenSSH ControlMaster): ssh -L speed, but a remote half-close is not passed on',
      group: 'ssh',
    },
    {
      flags: '--remote-node <path>',
      help: 'node on the remote host (default node; none: run nothing there, stock-sshd mode)',
      man:
        "The node binary on the remote host (default node); sshuttle's --python points here. none: never run " +
        'node there (stock-sshd mode), which is also what happens by itself where the remote has no node 16+.',
      group: 'ssh',
      value: 'text',
      default: 'node',
    },
    { flags: '--python <path>', help: 'sshuttle compatibility: see --remote-node', group: 'ssh', hidden: true },
    {
      flags: '--method <auto|nat|nft|tproxy>',
      help: 'how connections are captured: iptables nat, an nftables table of its own, tproxy (TCP and UDP; root), or auto',
      man:
        'How the firewall captures connections. nat: a chain in iptables\' nat table (both families). nft: one ' +
        'nftables table of the instance (inet rxshuttle-PORT), loaded in one transaction and removed by deleting ' +
        'it. tproxy: iptables\' mangle table with TPROXY and a policy route of its own, for TCP and UDP (UDP needs node ' +
        'on the remote host, and rxshuttle must run as root for its transparent sockets). auto (default): nat where ' +
        'iptables is installed, else nft. --kill-switch needs iptables with every method. pf and ipfw (macOS, BSD) ' +
        'are not available on Linux.',
      group: 'tunnel',
      value: 'choice',
      choices: METHODS,
      default: 'auto',
    },
    {
      flags: '--tmark <mark>',
      help: 'with --method tproxy: the firewall mark of captured packets (default 0x01)',
      man:
        'With --method tproxy: the fwmark that sends captured packets to the instance\'s own local route table ' +
        '(a number or 0x-hex; default 0x01, as sshuttle). Choose another when 0x01 means something else here.',
      group: 'tunnel',
      value: 'text',
    },
    {
      flags: '--user <user>',
      help: "capture only this user's connections on this machine (a name or uid)",
      man:
        "Capture only this user's connections made on this machine (an owner match on the firewall's OUTPUT " +
        "jumps); other users' go the direct way. Forwarded traffic (router mode) has no owner and is not affected.",
      group: 'tunnel',
      value: 'user',
    },
    {
      flags: '--group <group>',
      help: 'capture only connections of processes whose primary group is this one (a name or gid)',
      group: 'tunnel',
      value: 'group',
    },
    {
      flags: '--disable-ipv6',
      help: 'no IPv6 at all: no IPv6 rules, listener, AAAA lookups for host names, nor IPv6 nameservers',
      group: 'tunnel',
    },
    // Running it
    {
      flags: '--kill-switch',
      help: 'if rxshuttle dies without a clean stop, keep the subnets blocked (REJECT) until the next start or --flush',
      man:
        'If rxshuttle (or its firewall helper) dies without a clean stop (kill -9, a crash), the tunneled subnets and ' +
        'the captured nameservers stay blocked with REJECT instead of going back to the direct path, until the ' +
        'next rxshuttle on the same port starts or rxshuttle --flush removes the block. A clean stop (Ctrl-C, ' +
        'SIGTERM) leaves nothing.',
      group: 'running',
    },
    {
      flags: '--flush',
      help: 'remove the subnets blocked by --kill-switch (needs root: asks sudo), then exit',
      group: 'running',
    },
    {
      flags: '--json',
      help: "print the tunnel's events as JSON lines on stdout (for scripts and supervisors)",
      group: 'running',
    },
    {
      flags: '-v, --verbose',
      help: 'print more: connections (-v), remote output (-vv), traces (-vvv)',
      man:
        'Print more: -v connections, routes and names, -vv remote output and the server start, -vvv traces ' +
        '(DEBUG=rxshuttle:*). Without it rxshuttle prints a line when the tunnel is up, one when it stops, ' +
        'warnings and errors.',
      group: 'running',
      counter: true,
    },
    {
      flags: '-D, --daemon',
      help: 'run in the background once the tunnel is up (implies --syslog)',
      man:
        'Run in the background once the tunnel is up (implies --syslog). A failure to connect is still reported ' +
        'on the terminal, with a non-zero exit.',
      group: 'running',
    },
    { flags: '--syslog', help: 'once the tunnel is up, log to syslog instead of stderr', group: 'running' },
    {
      flags: '--pidfile <file>',
      help: `with -D: write the daemon's pid there (default ./${DEFAULT_PIDFILE})`,
      man: `With -D: the daemon's pid file (default ${DEFAULT_PIDFILE} in the current directory); written once the tunnel is up, removed on exit.`,
      group: 'running',
      value: 'file',
    },
    { flags: '-V, --version', help: 'print the version and exit', group: 'running', builtin: 'version' },
    { flags: '-h, --help', help: 'print this help and exit', group: 'running', builtin: 'help' },
    { flags: '--server', help: 'internal: run the server on stdin/stdout', group: 'running', hidden: true },
    { flags: DAEMON_CHILD, help: 'internal: the re-spawned daemon', group: 'running', hidden: true },
    // Privileges
    {
      flags: '--sudoers',
      help: 'install a sudoers rule that lets this user start the firewall helper without a password',
      man:
        'Install a sudoers rule (in /etc/sudoers.d, checked with visudo) that lets a user start the firewall ' +
        'helper without a password, for their own traffic only; without root it asks sudo.',
      group: 'privileges',
    },
    { flags: '--sudoers-no-modify', help: 'print that sudoers rule instead of installing it', group: 'privileges' },
    {
      flags: '--sudoers-user <user>',
      help: 'with --sudoers: the user (or %group) the rule is for (default: you)',
      group: 'privileges',
      value: 'user',
    },
    {
      flags: '--sudoers-filename <name>',
      help: 'with --sudoers: the file in /etc/sudoers.d (default rxshuttle_auto)',
      group: 'privileges',
      value: 'text',
    },
  ],
  commands: [
    { name: 'completion', argument: '<shell>', choices: ['bash', 'zsh'], help: 'print the bash or zsh completion script' },
    {
      name: 'status',
      help: "list this user's running tunnels: state, remote, connections, bytes, DNS",
      options: [
        { flags: '--json', help: 'one JSON document {"instances": [...]}' },
        { flags: '-v, --verbose', help: 'also list the open connections' },
      ],
    },
  ],
  description: [
    'rxshuttle catches every TCP connection a local program opens to the given subnets with a firewall rule, ' +
      'carries it over one ssh session and opens it again from the remote host: a VPN without anything ' +
      'installed on the remote host and without root there. It re-implements sshuttle and takes its options.',
    'Where the remote host has node 16 or newer, rxshuttle uploads a small server and runs it there for the ' +
      "session; otherwise sshd's own channels carry the connections (stock-sshd mode). Started as a normal user, " +
      'rxshuttle runs its firewall helper through sudo (see --sudoers).',
  ],
  sources: [
    {
      term: '@FILE',
      help: 'the arguments in FILE, one per line (# comments)',
      text: 'An argument @FILE is replaced by the arguments in FILE, one per line, as sshuttle reads them: blank lines and lines starting with # are skipped, quotes around a whole line are removed, and an @FILE inside it is read too.',
    },
    {
      term: ARGS_ENV,
      help: `words put in front of the command line (if unset: ${SSHUTTLE_ARGS_ENV})`,
      text: `Arguments that go in front of the command line, split as a shell would (no expansion); when it is not set, ${SSHUTTLE_ARGS_ENV} is read instead. What the command line says last wins.`,
    },
  ],
  examples: [
    { command: 'rxshuttle -r me@bastion 10.0.0.0/8 -x 10.9.0.0/16', comment: 'a VPN to 10/8, but not 10.9/16' },
    { command: 'rxshuttle -r me@bastion:2222 0/0', comment: 'everything (the ssh connection itself is excluded)' },
    { command: 'rxshuttle --dns -r me@bastion 0/0', comment: "DNS too, answered by the bastion's resolver" },
    { command: 'rxshuttle -vNH -r me@bastion', comment: "the bastion's networks and host names, found by themselves" },
    { command: 'rxshuttle -r me@bastion -s office-subnets.txt', comment: 'the subnets listed in a file' },
    { command: 'rxshuttle @office.conf', comment: 'the arguments in a file, one per line' },
    { command: 'rxshuttle -D -r me@bastion 10.0.0.0/8', comment: 'in the background; kill $(cat rxshuttle.pid) ends it' },
    { command: 'rxshuttle -v 0/0', comment: 'local mode: no ssh, proxy through a local server (as root)' },
  ],
  exitStatus: [
    { code: 0, text: 'The tunnel ended on SIGINT, SIGTERM or SIGHUP, or a command (--help, completion, --sudoers) did its work.' },
    { code: 1, text: 'The tunnel could not start or broke: ssh, the remote server, the firewall, the listener. One line on stderr says why.' },
    { code: 2, text: 'A usage error: an option, a subnet, a file or an argument that cannot be used. One line on stderr names it.' },
  ],
  seeAlso: ['ssh(1)', 'ssh_config(5)', 'sudoers(5)', 'iptables(8)', 'sshuttle(8)'],
};

/** An option's names and its value placeholder: `-l, --listen <[ip:]port>` → ['-l', '--listen'], '[ip:]port'. */
export function flagParts(flags: string): { names: string[]; value?: string } {
  const at = flags.search(/ [<[]/);
  const names = (at < 0 ? flags : flags.slice(0, at)).split(/[ ,|]+/).filter((name) => name !== '');
  const value = at < 0 ? undefined : flags.slice(at + 2, -1);
  return value === undefined ? { names } : { names, value };
}

/** The options a user can see: in help, the man page and completion. */
export const visibleOptions = (spec: CliSpec): OptionDef[] => spec.options.filter((option) => !option.hidden);
