;; WASI plugin (needs useWasi): `write_both` writes to stdout and stderr and outputs "ok";
;; `exit_nonzero` calls proc_exit(3).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (data (i32.const 16) "to stdout\n")
  (data (i32.const 32) "to stderr\n")

  ;; One iovec at address 0 pointing at (ptr, len); bytes written land at address 8.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func (export "write_both") (result i32)
    (local $out i64)
    (call $write (i32.const 1) (i32.const 16) (i32.const 10))
    (call $write (i32.const 2) (i32.const 32) (i32.const 10))
    (local.set $out (call $alloc (i64.const 2)))
    (call $store_u8 (local.get $out) (i32.const 0x6f))
    (call $store_u8 (i64.add (local.get $out) (i64.const 1)) (i32.const 0x6b))
    (call $output_set (local.get $out) (i64.const 2))
    (i32.const 0))

  (func (export "exit_nonzero") (result i32)
    (call $proc_exit (i32.const 3))
    (i32.const 0)))
