;; Passive segments that each call drops. `take` copies the passive data segment "fresh" to address 0
;; (memory.init), puts the passive element segment's function in the table (table.init), drops both
;; (data.drop, elem.drop), calls through the table for the length and outputs those bytes.
;; A fresh instance outputs "fresh"; an instance reused with its segments dropped would trap.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (table 1 funcref)
  (data $word "fresh")
  (elem $lengths func $five)

  (func $five (result i32) (i32.const 5))

  (func (export "take") (result i32)
    (local $len i32) (local $block i64) (local $i i32)
    (memory.init $word (i32.const 0) (i32.const 0) (i32.const 5))
    (data.drop $word)
    (table.init $lengths (i32.const 0) (i32.const 0) (i32.const 1))
    (elem.drop $lengths)
    (local.set $len (call_indirect (result i32) (i32.const 0)))
    (local.set $block (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (call $store_u8 (i64.add (local.get $block) (i64.extend_i32_u (local.get $i))) (i32.load8_u (local.get $i)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $output_set (local.get $block) (i64.extend_i32_u (local.get $len)))
    (i32.const 0)))
