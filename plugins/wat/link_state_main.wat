;; The main module for link_state_side.wat (linked as "counter"): answers its bump in decimal, after
;; bumping a global of its own the same way (so 101 + 1 = 102 on fresh instances).
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "counter" "bump" (func $bump (result i32)))
  (memory (export "memory") 1)
  (global $mine (mut i32) (i32.const 0))

  ;; Outputs `v` in decimal.
  (func $emit (param $v i32)
    (local $at i32) (local $len i32) (local $b i64) (local $i i32)
    (local.set $at (i32.const 64))
    (loop $digits
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digits (i32.ne (local.get $v) (i32.const 0))))
    (local.set $len (i32.sub (i32.const 64) (local.get $at)))
    (local.set $b (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done
      (loop $copy
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (call $store_u8 (i64.add (local.get $b) (i64.extend_i32_u (local.get $i)))
          (i32.load8_u (i32.add (local.get $at) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $copy)))
    (call $output_set (local.get $b) (i64.extend_i32_u (local.get $len))))

  (func (export "run") (result i32)
    (global.set $mine (i32.add (global.get $mine) (i32.const 1)))
    (call $emit (i32.add (call $bump) (global.get $mine)))
    (i32.const 0)))
