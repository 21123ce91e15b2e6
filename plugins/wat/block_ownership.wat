;; Frees Extism blocks the way real PDKs do, to check the host's block ownership rules against the
;; SDK's: config_get, var_get and log_* take their block, some PDKs free it again anyway (the Haskell
;; PDK frees a config key after config_get), and a block index is never handed out twice in a call.
;;   greet          the Haskell PDK's getConfig: "<config greeting, else Hello>, <input>"
;;   var_again      var_get, then frees its key again; answers the var's value
;;   log_then_free  frees a block a log function already took, after allocating another
;;   free_twice     frees a block twice, after allocating another
;;   lengths        the length of a freed block and of a key config_get took: "0,0"
;;   input_freed    frees the input block, then reports its length: "n=0"
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "free" (func $free (param i64)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "load_u8" (func $load_u8 (param i64) (result i32)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "config_get" (func $config_get (param i64) (result i64)))
  (import "extism:host/env" "var_get" (func $var_get (param i64) (result i64)))
  (import "extism:host/env" "var_set" (func $var_set (param i64 i64)))
  (import "extism:host/env" "log_info" (func $log_info (param i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "greeting")
  (data (i32.const 16) "Hello")
  (data (i32.const 32) ", ")
  (data (i32.const 48) "key")
  (data (i32.const 64) "value!")
  (data (i32.const 80) "a log line")

  ;; A new block holding `len` bytes of linear memory at `ptr`.
  (func $block (param $ptr i32) (param $len i32) (result i64)
    (local $b i64) (local $i i32)
    (local.set $b (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done
      (loop $copy
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (call $store_u8 (i64.add (local.get $b) (i64.extend_i32_u (local.get $i)))
          (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $copy)))
    (local.get $b))

  ;; Copies block `b` into linear memory at `dst`; returns its length.
  (func $read (param $b i64) (param $dst i32) (result i32)
    (local $len i32) (local $i i32)
    (local.set $len (i32.wrap_i64 (call $length (local.get $b))))
    (block $done
      (loop $copy
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (i32.store8 (i32.add (local.get $dst) (local.get $i))
          (call $load_u8 (i64.add (local.get $b) (i64.extend_i32_u (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $copy)))
    (local.get $len))

  ;; Copies `len` bytes of linear memory from `src` to `dst`; returns `len`.
  (func $copy (param $src i32) (param $dst i32) (param $len i32) (result i32)
    (local $i i32)
    (block $done
      (loop $copy
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (i32.store8 (i32.add (local.get $dst) (local.get $i)) (i32.load8_u (i32.add (local.get $src) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $copy)))
    (local.get $len))

  ;; Sets the output to `len` bytes of linear memory at `ptr`.
  (func $output (param $ptr i32) (param $len i32)
    (call $output_set (call $block (local.get $ptr) (local.get $len)) (i64.extend_i32_u (local.get $len))))

  (func (export "greet") (result i32)
    (local $key i64) (local $value i64) (local $end i32) (local $i i32) (local $n i32)
    (local.set $key (call $block (i32.const 0) (i32.const 8)))
    (local.set $value (call $config_get (local.get $key)))
    ;; The Haskell PDK frees the key although config_get took it.
    (call $free (local.get $key))
    (local.set $end (i32.const 1024))
    (if (i64.eqz (local.get $value))
      (then (local.set $end (i32.add (local.get $end) (call $copy (i32.const 16) (local.get $end) (i32.const 5)))))
      (else (local.set $end (i32.add (local.get $end) (call $read (local.get $value) (local.get $end))))))
    (local.set $end (i32.add (local.get $end) (call $copy (i32.const 32) (local.get $end) (i32.const 2))))
    (local.set $n (i32.wrap_i64 (call $input_length)))
    (block $done
      (loop $copy
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store8 (i32.add (local.get $end) (local.get $i)) (call $input_load_u8 (i64.extend_i32_u (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $copy)))
    (call $output (i32.const 1024) (i32.sub (i32.add (local.get $end) (local.get $n)) (i32.const 1024)))
    (i32.const 0))

  (func (export "var_again") (result i32)
    (local $key i64) (local $value i64)
    (call $var_set (call $block (i32.const 48) (i32.const 3)) (call $block (i32.const 64) (i32.const 6)))
    (local.set $key (call $block (i32.const 48) (i32.const 3)))
    (local.set $value (call $var_get (local.get $key)))
    (call $free (local.get $key))
    (call $output (i32.const 1024) (call $read (local.get $value) (i32.const 1024)))
    (i32.const 0))

  (func (export "log_then_free") (result i32)
    (local $message i64) (local $other i64)
    (local.set $message (call $block (i32.const 80) (i32.const 10)))
    (call $log_info (local.get $message))
    (local.set $other (call $block (i32.const 64) (i32.const 6)))
    (call $free (local.get $message))
    (call $output_set (local.get $other) (i64.const 6))
    (i32.const 0))

  (func (export "free_twice") (result i32)
    (local $first i64) (local $second i64)
    (local.set $first (call $block (i32.const 48) (i32.const 3)))
    (call $free (local.get $first))
    (local.set $second (call $block (i32.const 64) (i32.const 6)))
    (call $free (local.get $first))
    (call $output_set (local.get $second) (i64.const 6))
    (i32.const 0))

  (func (export "lengths") (result i32)
    (local $freed i64) (local $key i64)
    (local.set $freed (call $block (i32.const 64) (i32.const 6)))
    (call $free (local.get $freed))
    (local.set $key (call $block (i32.const 0) (i32.const 8)))
    (drop (call $config_get (local.get $key)))
    (i32.store8 (i32.const 1024) (i32.add (i32.const 48) (i32.wrap_i64 (call $length (local.get $freed)))))
    (i32.store8 (i32.const 1025) (i32.const 44))
    (i32.store8 (i32.const 1026) (i32.add (i32.const 48) (i32.wrap_i64 (call $length (local.get $key)))))
    (call $output (i32.const 1024) (i32.const 3))
    (i32.const 0))

  (func (export "input_freed") (result i32)
    (call $free (call $input_offset))
    (i32.store8 (i32.const 1024) (i32.const 110))
    (i32.store8 (i32.const 1025) (i32.const 61))
    (i32.store8 (i32.const 1026) (i32.add (i32.const 48) (i32.wrap_i64 (call $input_length))))
    (call $output (i32.const 1024) (i32.const 3))
    (i32.const 0)))
