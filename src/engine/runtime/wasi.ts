// A sandboxed WASI preview 1 for plugins that import it: no files, no sockets, no environment,
// no arguments. stdout/stderr go to the current call's logs; stdin is empty; proc_exit unwinds
// with WasiExit. Stateless between calls, so a recycled instance needs nothing reset here. Every
// write into linear memory goes through `write*` below, which first tells `written` (the dirty map)
// which bytes it is about to change.
import { randomFillSync } from 'node:crypto';
import { WasiExit } from './call-failure.ts';
import type { HostSlot } from './host-env.ts';

export const WASI_PREVIEW1 = 'wasi_snapshot_preview1';

const ERRNO = { SUCCESS: 0, BADF: 8, INVAL: 28, NOSYS: 52, SPIPE: 70, NOTCAPABLE: 76 } as const;
const FILETYPE_CHARACTER_DEVICE = 2;

/** Every preview 1 function; those without a real implementation answer ENOSYS. */
const ALL_FUNCTIONS = [
  'args_get',
  'args_sizes_get',
  'clock_res_get',
  'clock_time_get',
  'environ_get',
  'environ_sizes_get',
  'fd_advise',
  'fd_allocate',
  'fd_close',
  'fd_datasync',
  'fd_fdstat_get',
  'fd_fdstat_set_flags',
  'fd_fdstat_set_rights',
  'fd_filestat_get',
  'fd_filestat_set_size',
  'fd_filestat_set_times',
  'fd_pread',
  'fd_prestat_get',
  'fd_prestat_dir_name',
  'fd_pwrite',
  'fd_read',
  'fd_readdir',
  'fd_renumber',
  'fd_seek',
  'fd_sync',
  'fd_tell',
  'fd_write',
  'path_create_directory',
  'path_filestat_get',
  'path_filestat_set_times',
  'path_link',
  'path_open',
  'path_readlink',
  'path_remove_directory',
  'path_rename',
  'path_symlink',
  'path_unlink_file',
  'poll_oneoff',
  'proc_exit',
  'proc_raise',
  'random_get',
  'sched_yield',
  'sock_accept',
  'sock_recv',
  'sock_send',
  'sock_shutdown',
];

/** The functions a plugin may import from WASI_PREVIEW1 (upload checks imports against it). */
export const WASI_FUNCTIONS: ReadonlySet<string> = new Set(ALL_FUNCTIONS);

const isStdio = (fd: number) => fd >= 0 && fd <= 2;

/** Told before the host writes `length` bytes at `start` of linear memory. */
export type HostWrite = (start: number, length: number) => void;

export function createWasi(slot: HostSlot, memory: WebAssembly.Memory, written: HostWrite): Record<string, unknown> {
  const view = () => new DataView(memory.buffer);
  const bytes = (ptr: number, len: number) => new Uint8Array(memory.buffer, ptr, len);
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

  const wasi: Record<string, unknown> = {};
  for (const name of ALL_FUNCTIONS) wasi[name] = () => ERRNO.NOSYS;

  Object.assign(wasi, {
    args_sizes_get: (argc: number, bufSize: number) => {
      writeU32(argc, 0);
      writeU32(bufSize, 0);
      return ERRNO.SUCCESS;
    },
    args_get: () => ERRNO.SUCCESS,
    environ_sizes_get: (count: number, bufSize: number) => {
      writeU32(count, 0);
      writeU32(bufSize, 0);
      return ERRNO.SUCCESS;
    },
    environ_get: () => ERRNO.SUCCESS,
    clock_res_get: (_id: number, out: number) => {
      writeU64(out, 1000n);
      return ERRNO.SUCCESS;
    },
    clock_time_get: (id: number, _precision: bigint, out: number) => {
      const now = id === 0 ? BigInt(Date.now()) * 1_000_000n : process.hrtime.bigint();
      writeU64(out, now);
      return ERRNO.SUCCESS;
    },
    random_get: (ptr: number, len: number) => {
      writeBytes(ptr, len, (target) => randomFillSync(target));
      return ERRNO.SUCCESS;
    },
    sched_yield: () => ERRNO.SUCCESS,
    proc_exit: (code: number) => {
      throw new WasiExit(code);
    },
    fd_write: (fd: number, iovs: number, iovsLen: number, writtenPtr: number) => {
      if (fd !== 1 && fd !== 2) return ERRNO.BADF;
      const v = view();
      let total = 0;
      const logs = slot.call?.logs;
      for (let i = 0; i < iovsLen; i++) {
        const ptr = v.getUint32(iovs + i * 8, true);
        const len = v.getUint32(iovs + i * 8 + 4, true);
        logs?.stream(fd === 1 ? 'stdout' : 'stderr', bytes(ptr, len));
        total += len;
      }
      writeU32(writtenPtr, total);
      return ERRNO.SUCCESS;
    },
    fd_read: (fd: number, _iovs: number, _iovsLen: number, read: number) => {
      if (fd !== 0) return ERRNO.BADF;
      writeU32(read, 0);
      return ERRNO.SUCCESS;
    },
    fd_fdstat_get: (fd: number, out: number) => {
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
    fd_fdstat_set_flags: (fd: number) => (isStdio(fd) ? ERRNO.SUCCESS : ERRNO.BADF),
    fd_prestat_get: () => ERRNO.BADF,
    fd_prestat_dir_name: () => ERRNO.BADF,
    fd_close: (fd: number) => (isStdio(fd) ? ERRNO.SUCCESS : ERRNO.BADF),
    fd_seek: (fd: number) => (isStdio(fd) ? ERRNO.SPIPE : ERRNO.BADF),
    fd_tell: (fd: number) => (isStdio(fd) ? ERRNO.SPIPE : ERRNO.BADF),
    fd_sync: (fd: number) => (isStdio(fd) ? ERRNO.SUCCESS : ERRNO.BADF),
    fd_datasync: (fd: number) => (isStdio(fd) ? ERRNO.SUCCESS : ERRNO.BADF),
    path_open: () => ERRNO.NOTCAPABLE,
  });
  return wasi;
}
