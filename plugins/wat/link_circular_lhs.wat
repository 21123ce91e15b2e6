;; The other half of link_circular_main.wat's pair, linked as "lhs": it imports add_one from
;; "main", which imports from it. (One import from "main" only: @extism/extism 2.0.0-rc13 keeps just
;; the last of several function imports it links lazily from one module.)
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "log_info" (func $log_info (param i64)))
  (import "extism:host/env" "error_set" (func $error_set (param i64)))
  (import "main" "add_one" (func $add_one (param i32) (result i32)))
  (memory 1)
  (data (i32.const 0) "hello from lhs")
  (data (i32.const 16) "lhs says no")

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

  (func (export "triple_plus_one") (param $x i32) (result i32)
    (call $add_one (i32.mul (local.get $x) (i32.const 3))))

  (func (export "say")
    (call $log_info (call $block (i32.const 0) (i32.const 14))))

  (func (export "fail_here")
    (call $error_set (call $block (i32.const 16) (i32.const 11))))

  (func (export "pong") (param $x i32) (result i32)
    (call $add_one (local.get $x))))
