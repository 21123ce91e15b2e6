;; The main module of a circular pair (with link_circular_lhs.wat, linked as "lhs"): it imports from
;; "lhs", which imports from it, so one side of the cycle is linked lazily (as @extism/extism does).
;;   run      input of n bytes: answers lhs.triple_plus_one(n) = add_one(3n), after lhs logs a line
;;   fail     lhs sets the call's error
;;   forever  add_one and lhs.pong call each other until the stack runs out (a hostile case)
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "lhs" "triple_plus_one" (func $triple_plus_one (param i32) (result i32)))
  (import "lhs" "say" (func $say))
  (import "lhs" "fail_here" (func $fail_here))
  (import "lhs" "pong" (func $pong (param i32) (result i32)))
  (memory (export "memory") 1)

  ;; x + 1; from 2^30 up, a ping-pong with lhs that never ends.
  (func $add_one (export "add_one") (param $x i32) (result i32)
    (if (i32.ge_u (local.get $x) (i32.const 0x40000000))
      (then (return (call $pong (local.get $x)))))
    (i32.add (local.get $x) (i32.const 1)))

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
    (local $v i32)
    (local.set $v (call $triple_plus_one (i32.wrap_i64 (call $input_length))))
    (call $say)
    (call $emit (local.get $v))
    (i32.const 0))

  (func (export "fail") (result i32)
    (call $fail_here)
    (i32.const 1))

  (func (export "forever") (result i32)
    (drop (call $add_one (i32.const 0x40000000)))
    (i32.const 0)))
