;; Hostile: `huge` outputs N bytes of 'x', N = the input as decimal (64 MiB when the input is empty).
;; The block is allocated on the host side via Extism `alloc`, so it bypasses the plugin's own memory.
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)

  ;; Decimal digits of the input; stops at the first non-digit. Empty input → 64 MiB.
  (func $requested_size (result i64)
    (local $len i64) (local $i i64) (local $digit i32) (local $n i64)
    (local.set $len (call $input_length))
    (if (i64.eqz (local.get $len)) (then (return (i64.const 67108864))))
    (block $done
      (loop $next
        (br_if $done (i64.ge_u (local.get $i) (local.get $len)))
        (local.set $digit (i32.sub (call $input_load_u8 (local.get $i)) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $digit) (i32.const 9)))
        (local.set $n (i64.add (i64.mul (local.get $n) (i64.const 10)) (i64.extend_i32_u (local.get $digit))))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $next)))
    (local.get $n))

  (func (export "huge") (result i32)
    (local $size i64) (local $block i64) (local $i i64)
    (local.set $size (call $requested_size))
    (local.set $block (call $alloc (local.get $size)))
    ;; 8 bytes at a time, then the tail.
    (block $words_done
      (loop $words
        (br_if $words_done (i64.gt_u (i64.add (local.get $i) (i64.const 8)) (local.get $size)))
        (call $store_u64 (i64.add (local.get $block) (local.get $i)) (i64.const 0x7878787878787878))
        (local.set $i (i64.add (local.get $i) (i64.const 8)))
        (br $words)))
    (block $bytes_done
      (loop $bytes
        (br_if $bytes_done (i64.ge_u (local.get $i) (local.get $size)))
        (call $store_u8 (i64.add (local.get $block) (local.get $i)) (i32.const 0x78))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $bytes)))
    (call $output_set (local.get $block) (local.get $size))
    (i32.const 0)))
