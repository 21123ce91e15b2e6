;; Hostile: `flood` logs a 100-byte message at info level 100000 times (10 MB of log text), or as
;; many times as the input says (decimal). Like a PDK would, it allocates a fresh Extism block for
;; each message (log_info frees it). Note: the stock JS SDK never reuses block slots within a call
;; and its addresses only hold 32767 of them, so there the default flood fails after 32767 lines.
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "log_info" (func $log_info (param i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  ;; 100 bytes.
  (data (i32.const 0) "log flood: this line is here to fill the log, over and over, until the host stops listening.......")

  (global $messageLength i32 (i32.const 100))
  (global $defaultCount i32 (i32.const 100000))

  ;; The input as a decimal count; the default when the input is empty.
  (func $requested_count (result i32)
    (local $len i64) (local $i i64) (local $digit i32) (local $n i32)
    (local.set $len (call $input_length))
    (if (i64.eqz (local.get $len)) (then (return (global.get $defaultCount))))
    (block $done
      (loop $next
        (br_if $done (i64.ge_u (local.get $i) (local.get $len)))
        (local.set $digit (i32.sub (call $input_load_u8 (local.get $i)) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $digit) (i32.const 9)))
        (local.set $n (i32.add (i32.mul (local.get $n) (i32.const 10)) (local.get $digit)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $next)))
    (local.get $n))

  ;; Copies `len` bytes of linear memory at `src` into a new Extism block.
  (func $to_block (param $src i32) (param $len i32) (result i64)
    (local $block i64) (local $i i32)
    (local.set $block (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (call $store_u8
          (i64.add (local.get $block) (i64.extend_i32_u (local.get $i)))
          (i32.load8_u (i32.add (local.get $src) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $block))

  (func (export "flood") (result i32)
    (local $n i32) (local $count i32)
    (local.set $count (call $requested_count))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $n) (local.get $count)))
        (call $log_info (call $to_block (i32.const 0) (global.get $messageLength)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    ;; "done"
    (i32.store (i32.const 200) (i32.const 0x656e6f64))
    (call $output_set (call $to_block (i32.const 200) (i32.const 4)) (i64.const 4))
    (i32.const 0)))
