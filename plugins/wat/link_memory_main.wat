;; Imports its memory from link_memory_side.wat (linked as "mem_side"): writes the input at 128,
;; has the side module stamp and sum it, and answers "shared:  from side#1 <sum>" from that memory.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "mem_side" "memory" (memory 1))
  (import "mem_side" "stamp" (func $stamp))
  (import "mem_side" "sum" (func $sum (param i32 i32) (result i32)))

  (func (export "run") (result i32)
    (local $len i32) (local $i i32) (local $v i32) (local $at i32) (local $b i64)
    (local.set $len (i32.wrap_i64 (call $input_length)))
    (block $done
      (loop $copy
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (i32.store8 (i32.add (i32.const 128) (local.get $i)) (call $input_load_u8 (i64.extend_i32_u (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $copy)))
    (call $stamp)
    ;; "shared: " (0..8), then " from side#N" (64..76), then " " and the sum in decimal, built at 300..
    (memory.copy (i32.const 300) (i32.const 0) (i32.const 8))
    (memory.copy (i32.const 308) (i32.const 64) (i32.const 12))
    (i32.store8 (i32.const 320) (i32.const 32))
    (local.set $v (call $sum (i32.const 128) (local.get $len)))
    (local.set $at (i32.const 400))
    (loop $digits
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digits (i32.ne (local.get $v) (i32.const 0))))
    (memory.copy (i32.const 321) (local.get $at) (i32.sub (i32.const 400) (local.get $at)))
    (local.set $len (i32.add (i32.const 21) (i32.sub (i32.const 400) (local.get $at))))
    (local.set $b (call $alloc (i64.extend_i32_u (local.get $len))))
    (local.set $i (i32.const 0))
    (block $done
      (loop $copy
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (call $store_u8 (i64.add (local.get $b) (i64.extend_i32_u (local.get $i)))
          (i32.load8_u (i32.add (i32.const 300) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $copy)))
    (call $output_set (local.get $b) (i64.extend_i32_u (local.get $len)))
    (i32.const 0)))
