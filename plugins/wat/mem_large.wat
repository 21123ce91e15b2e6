;; Memory-size probe, pages (64 MiB) of memory: `first_byte` reads the first byte of its input (0 when
;; empty), keeps it in linear memory at address 16, and outputs that one byte. The same trivial call
;; on mem_small (1 page) and mem_large (1024 pages): its cost must not follow the declared memory.
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1024)

  (func (export "first_byte") (result i32)
    (local $out i64)
    (if (i64.gt_u (call $input_length) (i64.const 0))
      (then (i32.store8 (i32.const 16) (call $input_load_u8 (i64.const 0)))))
    (local.set $out (call $alloc (i64.const 1)))
    (call $store_u8 (local.get $out) (i32.load8_u (i32.const 16)))
    (call $output_set (local.get $out) (i64.const 1))
    (i32.const 0)))
