;; A WASI reactor linked as "wasi_side" by link_wasi_main.wat: _initialize runs at start-up (as the
;; SDK starts a WASI module), and probe reads the argument and environment counts through WASI.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $initialized (mut i32) (i32.const 0))

  (func (export "_initialize")
    (global.set $initialized (i32.const 40)))

  ;; initialized + argc + environment count + both errnos (0 when they succeed); 40 when all is empty.
  (func (export "probe") (result i32)
    (local $errnos i32)
    (local.set $errnos (i32.add (call $args_sizes_get (i32.const 0) (i32.const 4))
      (call $environ_sizes_get (i32.const 8) (i32.const 12))))
    (i32.add (global.get $initialized)
      (i32.add (local.get $errnos) (i32.add (i32.load (i32.const 0)) (i32.load (i32.const 8)))))))
