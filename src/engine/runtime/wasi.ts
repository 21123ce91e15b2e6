// A sandboxed WASI preview 1 for plugins that import it: no files, no sockets, no environment,
// no arguments. stdout/stderr go to the current call's logs; stdin is empty; proc_exit unwinds
// with WasiExit, kept as the call's failure like any failed host call (a plugin that catches it
// cannot go on). Stateless between calls, so a recycled instance needs nothing reset here. Every
// write into linear memory goes through `write*` below, which first tells `written` (the dirty map)
// which bytes it is about to change.
import { randomFillSync } from 'node:crypto';
import { WasiExit } from './call-failure.ts';
import { bindHost, type CallState, type HostSlot } from './host-env.ts';
import { sig, type Signature } from './signatures.ts';

export const WASI_PREVIEW1 = 'wasi_snapshot_preview1';

const ERRNO = { SUCCESS: 0, BADF: 8, INVAL: 28, NOSYS: 52, SPIPE: 70, NOTCAPABLE: 76 } as const;
const FILETYPE_CHARACTER_DEVICE = 2;

/**
 * Every preview 1 function and its Wasm signature (wasi_snapshot_preview1.witx, as wasi-libc imports
 * them); those without an implementation below answer ENOSYS.
 */
const WASI_FUNCTIONS: Readonly<Record<string, Signature>> = {
  args_get: sig('i32 i32', 'i32'),
  args_sizes_get: sig('i32 i32', 'i32'),
  clock_res_get: sig('i32 i32', 'i32'),
  clock_time_get: sig('i32 i64 i32', 'i32'),
  environ_get: sig('i32 i32', 'i32'),
  environ_sizes_get: sig('i32 i32', 'i32'),
  fd_advise: sig('i32 i64 i64 i32', 'i32'),
  fd_allocate: sig('i32 i64 i64', 'i32'),
  fd_close: sig('i32', 'i32'),
  fd_datasync: sig('i32', 'i32'),
  fd_fdstat_get: sig('i32 i32', 'i32'),
  fd_fdstat_set_flags: sig('i32 i32', 'i32'),
  fd_fdstat_set_rights: sig('i32 i64 i64', 'i32'),
  fd_filestat_get: sig('i32 i32', 'i32'),
  fd_filestat_set_size: sig('i32 i64', 'i32'),
  fd_filestat_set_times: sig('i32 i64 i64 i32', 'i32'),
  fd_pread: sig('i32 i32 i32 i64 i32', 'i32'),
  fd_prestat_get: sig('i32 i32', 'i32'),
  fd_prestat_dir_name: sig('i32 i32 i32', 'i32'),
  fd_pwrite: sig('i32 i32 i32 i64 i32', 'i32'),
  fd_read: sig('i32 i32 i32 i32', 'i32'),
  fd_readdir: sig('i32 i32 i32 i64 i32', 'i32'),
  fd_renumber: sig('i32 i32', 'i32'),
  fd_seek: sig('i32 i64 i32 i32', 'i32'),
  fd_sync: sig('i32', 'i32'),
  fd_tell: sig('i32 i32', 'i32'),
  fd_write: sig('i32 i32 i32 i32', 'i32'),
  path_create_directory: sig('i32 i32 i32', 'i32'),
  path_filestat_get: sig('i32 i32 i32 i32 i32', 'i32'),
  path_filestat_set_times: sig('i32 i32 i32 i32 i64 i64 i32', 'i32'),
  path_link: sig('i32 i32 i32 i32 i32 i32 i32', 'i32'),
  path_open: sig('i32 i32 i32 i32 i32 i64 i64 i32 i32', 'i32'),
  path_readlink: sig('i32 i32 i32 i32 i32 i32', 'i32'),
  path_remove_directory: sig('i32 i32 i32', 'i32'),
  path_rename: sig('i32 i32 i32 i32 i32 i32', 'i32'),
  path_symlink: sig('i32 i32 i32 i32 i32', 'i32'),
  path_unlink_file: sig('i32 i32 i32', 'i32'),
  poll_oneoff: sig('i32 i32 i32 i32', 'i32'),
  proc_exit: sig('i32', ''),
  proc_raise: sig('i32', 'i32'),
  random_get: sig('i32 i32', 'i32'),
  sched_yield: sig('', 'i32'),
  sock_accept: sig('i32 i32 i32', 'i32'),
  sock_recv: sig('i32 i32 i32 i32 i32 i32', 'i32'),
  sock_send: sig('i32 i32 i32 i32 i32', 'i32'),
  sock_shutdown: sig('i32 i32', 'i32'),
};

/** The functions a plugin may import from WASI_PREVIEW1 and their signatures (upload checks imports against it). */
export const WASI_SIGNATURES: ReadonlyMap<string, Signature> = new Map(Object.entries(WASI_FUNCTIONS));

const isStdio = (fd: number) => fd >= 0 && fd <= 2;

/** Told before the host writes `length` bytes at `start` of linear memory. */
export type HostWrite = (start: number, length: number) => void;

type WasiImpl = (call: CallState, ...args: never[]) => unknown;

/**
 * The WASI import object of one instance (its memory); every function is bound like the Extism ones
 * (bindHost). `addressable`: the bytes of memory the plugin has now, when less than the Memory holds:
 * with the grow shim a recycled instance's Memory keeps what earlier calls grew, and a host access past
 * the plugin's own size must fail as it would on a fresh instance.
 */
export function createWasi(
  slot: HostSlot,
  memory: WebAssembly.Memory,
  written: HostWrite,
  addressable: () => number = () => memory.buffer.byteLength,
): Record<string, unknown> {
  const view = () => new DataView(memory.buffer, 0, Math.min(addressable(), memory.buffer.byteLength));
  const bytes = (ptr: number, len: number) => {
    if (ptr + len > addressable()) throw new RangeError(`out of bounds memory access (${ptr} + ${len})`);
    return new Uint8Array(memory.buffer, ptr, len);
  };
  const writeU32 = (ptr: number, value: number) => {
    written(ptr, 4);
    view().setUint32(ptr, value, true);
  };
  const writeU64 = (ptr: number, value: bigint) => {
    written(ptr, 8);
    view().setBigUint64(ptr, value, true);
  };
  const writeBytes = (ptr: number, len: number, fill: (target: Uint8Array) => void) => {
    written(ptr, len);
    fill(bytes(ptr, len));
  };

  const implemented: Record<string, WasiImpl> = {
    args_sizes_get: (_call, argc: number, bufSize: number) => {
      writeU32(argc, 0);
      writeU32(bufSize, 0);
      return ERRNO.SUCCESS;
    },
    args_get: () => ERRNO.SUCCESS,
    environ_sizes_get: (_call, count: number, bufSize: number) => {
      writeU32(count, 0);
      writeU32(bufSize, 0);
      return ERRNO.SUCCESS;
    },
    environ_get: () => ERRNO.SUCCESS,
    clock_res_get: (_call, _id: number, out: number) => {
      writeU64(out, 1000n);
      return ERRNO.SUCCESS;
    },
    clock_time_get: (_call, id: number, _precision: bigint, out: number) => {
      const now = id === 0 ? BigInt(Date.now()) * 1_000_000n : process.hrtime.bigint();
      writeU64(out, now);
      return ERRNO.SUCCESS;
    },
    random_get: (_call, ptr: number, len: number) => {
      writeBytes(ptr, len, (target) => randomFillSync(target));
      return ERRNO.SUCCESS;
    },
    sched_yield: () => ERRNO.SUCCESS,
    proc_exit: (_call, code: number) => {
      throw new WasiExit(code);
    },
    fd_write: (call, fd: number, iovs: number, iovsLen: number, writtenPtr: number) => {
      if (fd !== 1 && fd !== 2) return ERRNO.BADF;
      const v = view();
      let total = 0;
      for (let i = 0; i < iovsLen; i++) {
        const ptr = v.getUint32(iovs + i * 8, true);
        const len = v.getUint32(iovs + i * 8 + 4, true);
        call.logs.stream(fd === 1 ? 'stdout' : 'stderr', bytes(ptr, len));
        total += len;
      }
      writeU32(writtenPtr, total % 2 ** 32);
      return ERRNO.SUCCESS;
    },
    fd_read: (_call, fd: number, _iovs: number, _iovsLen: number, read: number) => {
      if (fd !== 0) return ERRNO.BADF;
      writeU32(read, 0);
      return ERRNO.SUCCESS;
    },
    fd_fdstat_get: (_call, fd: number, out: number) => {
      if (!isStdio(fd)) return ERRNO.BADF;
      // fdstat: filetype u8, (pad), flags u16, (pad), rights_base u64, rights_inheriting u64.
      writeBytes(out, 24, (target) => {
        const v = new DataView(target.buffer, target.byteOffset, 24);
        v.setUint8(0, FILETYPE_CHARACTER_DEVICE);
        v.setUint16(2, 0, true);
        v.setBigUint64(8, 0xffffffffn, true);
        v.setBigUint64(16, 0n, true);
      });
      return ERRNO.SUCCESS;
    },
    fd_fdstat_set_flags: (_call, fd: number) => (isStdio(fd) ? ERRNO.SUCCESS : ERRNO.BADF),
    fd_prestat_get: () => ERRNO.BADF,
    fd_prestat_dir_name: () => ERRNO.BADF,
    fd_close: (_call, fd: number) => (isStdio(fd) ? ERRNO.SUCCESS : ERRNO.BADF),
    fd_seek: (_call, fd: number) => (isStdio(fd) ? ERRNO.SPIPE : ERRNO.BADF),
    fd_tell: (_call, fd: number) => (isStdio(fd) ? ERRNO.SPIPE : ERRNO.BADF),
    fd_sync: (_call, fd: number) => (isStdio(fd) ? ERRNO.SUCCESS : ERRNO.BADF),
    fd_datasync: (_call, fd: number) => (isStdio(fd) ? ERRNO.SUCCESS : ERRNO.BADF),
    path_open: () => ERRNO.NOTCAPABLE,
  };
  const nosys: WasiImpl = () => ERRNO.NOSYS;
  const wasi: Record<string, unknown> = {};
  for (const [name, signature] of Object.entries(WASI_FUNCTIONS)) {
    wasi[name] = bindHost(slot, name, { signature, run: implemented[name] ?? nosys });
  }
  return wasi;
}
