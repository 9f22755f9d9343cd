/**
 * The bootstrap that the remote `node -e` runs: it reads a u32 length and that many bytes of
 * gzipped CommonJS (the server bundle) from stdin, compiles it as a module and starts it.
 * It contains no single quote, so it can travel inside '…' through the remote shell.
 * Exit 96: node too old (the client turns it into a clear message).
 */
export const NODE_TOO_OLD_EXIT = 96;
export const MIN_REMOTE_NODE_MAJOR = 16;

const STUB = [
  `var v=+process.versions.node.split(".")[0];`,
  `if(v<${MIN_REMOTE_NODE_MAJOR}){process.stderr.write("rxshuttle: remote node "+process.version+" is too old, need ${MIN_REMOTE_NODE_MAJOR} or newer\\n");process.exit(${NODE_TOO_OLD_EXIT})}`,
  `var c=[],n=0,L=-1;`,
  `process.stdin.on("data",function f(d){c.push(d);n+=d.length;var b=Buffer.concat(c);c=[b];`,
  `if(L<0&&n>=4)L=b.readUInt32BE(0);`,
  `if(L>=0&&n>=4+L){process.stdin.removeListener("data",f);process.stdin.pause();`,
  `var M=require("module"),m=new M("rxshuttle-server");m.paths=M._nodeModulePaths(process.cwd());`,
  `m._compile(require("zlib").gunzipSync(b.subarray(4,4+L)).toString(),"rxshuttle-server.js");`,
  `m.exports.main(b.subarray(4+L))}})`,
].join('');

export const stubSource = (): string => STUB;

/** Quotes a word for a POSIX shell. */
export const shellQuote = (word: string): string =>
  /^[A-Za-z0-9_./:=@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;

/**
 * The command line the remote shell runs: raise the open-file limit (each tunneled connection is
 * a descriptor there too), then exec the node binary on the stub.
 */
export const remoteCommand = (remoteNode: string): string =>
  `ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec ${shellQuote(remoteNode)} -e ${shellQuote(STUB)}`;
