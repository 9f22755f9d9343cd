/**
 * The bootstrap that the remote `node -e` runs: it reads a u32 length and that many bytes of
 * gzipped CommonJS (the server bundle) from fd 0 with blocking reads of exactly that size, so
 * nothing past the bundle is consumed and process.stdin is never opened (the server opens fd 0
 * itself, with large reads). Then it compiles the bundle as a module and starts it.
 * It contains no single quote, so it can travel inside '…' through the remote shell.
 * Exit 96: node too old (the client turns it into a clear message); 95: stdin ended early.
 */
export const NODE_TOO_OLD_EXIT = 96;
export const MIN_REMOTE_NODE_MAJOR = 16;

const STUB = [
  `var v=+process.versions.node.split(".")[0];`,
  `if(v<${MIN_REMOTE_NODE_MAJOR}){process.stderr.write("rxshuttle: remote node "+process.version+" is too old, need ${MIN_REMOTE_NODE_MAJOR} or newer\\n");process.exit(${NODE_TOO_OLD_EXIT})}`,
  `var fs=require("fs");`,
  `function r(n){var b=Buffer.alloc(n),o=0;while(o<n){var k;`,
  `try{k=fs.readSync(0,b,o,n-o,null)}catch(e){if(e.code!=="EAGAIN")throw e;`,
  `Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0,2);continue}`,
  `if(k===0)process.exit(95);o+=k}return b}`,
  `var L=r(4).readUInt32BE(0);`,
  `var M=require("module"),m=new M("rxshuttle-server");m.paths=M._nodeModulePaths(process.cwd());`,
  `m._compile(require("zlib").gunzipSync(r(L)).toString(),"rxshuttle-server.js");`,
  `m.exports.main()`,
].join('');

export const stubSource = (): string => STUB;

/** Quotes a word for a POSIX shell. */
export const shellQuote = (word: string): string =>
  /^[A-Za-z0-9_./:=@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;

/**
 * Grows sshd's 64 KiB stdio pipes to 1 MiB (F_SETPIPE_SZ = 1031) before node starts: +18–27 %
 * upload in DESIGN.md's measurements. perl-base is on every Debian; without it nothing changes.
 */
const GROW_PIPES = `perl -e "fcntl(STDIN,1031,1<<20);fcntl(STDOUT,1031,1<<20)" 2>/dev/null`;

/**
 * The command line the remote shell runs: raise the open-file limit (each tunneled connection is
 * a descriptor there too), grow the pipes, then exec the node binary on the stub.
 */
export const remoteCommand = (remoteNode: string): string =>
  `ulimit -n "$(ulimit -Hn)" 2>/dev/null; ${GROW_PIPES}; exec ${shellQuote(remoteNode)} -e ${shellQuote(STUB)}`;
