;; Isolation probe. `probe` outputs
;;   {"memCounter":A,"globalCounter":B,"var":C,"leftover":"<hex>"}
;; A: i32 counter at linear-memory address 1024, read then incremented;
;; B: a NON-exported mutable global, read then incremented;
;; C: Extism var "n" (decimal text, missing = 0), read then set to C+1;
;; leftover: the first 16 bytes of the static buffer at 4096 as hex, read BEFORE the call's input
;;   is copied into that buffer.
;; A fresh instance with fresh Extism state gives 0, 0, 0 and 32 zeros; anything else leaked.
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "load_u8" (func $load_u8 (param i64) (result i32)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "var_get" (func $var_get (param i64) (result i64)))
  (import "extism:host/env" "var_set" (func $var_set (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)

  (global $globalCounter (mut i32) (i32.const 0))

  ;; Memory map: 0.. text pieces, 1024 counter, 4096 input buffer (1024 bytes), 8192 output, 12288 scratch.
  (data (i32.const 0) "{\"memCounter\":")                     ;; 14 bytes
  (data (i32.const 32) ",\"globalCounter\":")                 ;; 17 bytes
  (data (i32.const 64) ",\"var\":")                           ;; 7 bytes
  (data (i32.const 96) ",\"leftover\":\"")                    ;; 13 bytes
  (data (i32.const 128) "\"}")                                ;; 2 bytes
  (data (i32.const 160) "0123456789abcdef")

  ;; Copies `len` bytes from `src` to `dst` in linear memory; returns dst + len.
  (func $copy (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (i32.store8 (i32.add (local.get $dst) (local.get $i)) (i32.load8_u (i32.add (local.get $src) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.add (local.get $dst) (local.get $len)))

  ;; Writes `value` in decimal at `dst`; returns the address after the last digit.
  (func $write_decimal (param $dst i32) (param $value i32) (result i32)
    (local $digits i32) (local $v i32) (local $i i32)
    ;; count digits
    (local.set $v (local.get $value))
    (local.set $digits (i32.const 1))
    (block $counted
      (loop $count
        (br_if $counted (i32.lt_u (local.get $v) (i32.const 10)))
        (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
        (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
        (br $count)))
    ;; fill from the right
    (local.set $v (local.get $value))
    (local.set $i (local.get $digits))
    (loop $fill
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (local.get $dst) (local.get $i))
        (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $fill (i32.gt_u (local.get $i) (i32.const 0))))
    (i32.add (local.get $dst) (local.get $digits)))

  ;; Copies linear memory [src, src+len) into a new Extism block.
  (func $to_block (param $src i32) (param $len i32) (result i64)
    (local $block i64) (local $i i32)
    (local.set $block (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (call $store_u8 (i64.add (local.get $block) (i64.extend_i32_u (local.get $i)))
          (i32.load8_u (i32.add (local.get $src) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $block))

  ;; A fresh block holding the var key "n" (var_get frees its key block, so one per use).
  (func $key_n (result i64)
    (i32.store8 (i32.const 12288) (i32.const 0x6e))
    (call $to_block (i32.const 12288) (i32.const 1)))

  ;; Var "n" as a decimal number; 0 when missing.
  (func $read_var_n (result i32)
    (local $block i64) (local $len i64) (local $i i64) (local $digit i32) (local $n i32)
    (local.set $block (call $var_get (call $key_n)))
    (if (i64.eqz (local.get $block)) (then (return (i32.const 0))))
    (local.set $len (call $length (local.get $block)))
    (block $done
      (loop $next
        (br_if $done (i64.ge_u (local.get $i) (local.get $len)))
        (local.set $digit (i32.sub (call $load_u8 (i64.add (local.get $block) (local.get $i))) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $digit) (i32.const 9)))
        (local.set $n (i32.add (i32.mul (local.get $n) (i32.const 10)) (local.get $digit)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $next)))
    (local.get $n))

  (func $write_var_n (param $value i32)
    (local $end i32)
    (local.set $end (call $write_decimal (i32.const 12300) (local.get $value)))
    (call $var_set (call $key_n) (call $to_block (i32.const 12300) (i32.sub (local.get $end) (i32.const 12300)))))

  (func (export "probe") (result i32)
    (local $memCounter i32) (local $globalCounter i32) (local $var i32)
    (local $out i32) (local $i i32) (local $byte i32) (local $inputLen i64)

    (local.set $memCounter (i32.load (i32.const 1024)))
    (i32.store (i32.const 1024) (i32.add (local.get $memCounter) (i32.const 1)))
    (local.set $globalCounter (global.get $globalCounter))
    (global.set $globalCounter (i32.add (local.get $globalCounter) (i32.const 1)))
    (local.set $var (call $read_var_n))
    (call $write_var_n (i32.add (local.get $var) (i32.const 1)))

    (local.set $out (call $copy (i32.const 8192) (i32.const 0) (i32.const 14)))
    (local.set $out (call $write_decimal (local.get $out) (local.get $memCounter)))
    (local.set $out (call $copy (local.get $out) (i32.const 32) (i32.const 17)))
    (local.set $out (call $write_decimal (local.get $out) (local.get $globalCounter)))
    (local.set $out (call $copy (local.get $out) (i32.const 64) (i32.const 7)))
    (local.set $out (call $write_decimal (local.get $out) (local.get $var)))
    (local.set $out (call $copy (local.get $out) (i32.const 96) (i32.const 13)))
    ;; leftover: hex of the buffer's first 16 bytes as they are before this call writes to it
    (block $hex_done
      (loop $hex
        (br_if $hex_done (i32.ge_u (local.get $i) (i32.const 16)))
        (local.set $byte (i32.load8_u (i32.add (i32.const 4096) (local.get $i))))
        (i32.store8 (local.get $out) (i32.load8_u (i32.add (i32.const 160) (i32.shr_u (local.get $byte) (i32.const 4)))))
        (i32.store8 (i32.add (local.get $out) (i32.const 1))
          (i32.load8_u (i32.add (i32.const 160) (i32.and (local.get $byte) (i32.const 15)))))
        (local.set $out (i32.add (local.get $out) (i32.const 2)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $hex)))
    (local.set $out (call $copy (local.get $out) (i32.const 128) (i32.const 2)))

    ;; Now leave this call's input (up to 1024 bytes) in the buffer for a later call to find.
    (local.set $inputLen (call $input_length))
    (if (i64.gt_u (local.get $inputLen) (i64.const 1024)) (then (local.set $inputLen (i64.const 1024))))
    (local.set $i (i32.const 0))
    (block $copied
      (loop $next
        (br_if $copied (i64.ge_u (i64.extend_i32_u (local.get $i)) (local.get $inputLen)))
        (i32.store8 (i32.add (i32.const 4096) (local.get $i)) (call $input_load_u8 (i64.extend_i32_u (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))

    (call $output_set
      (call $to_block (i32.const 8192) (i32.sub (local.get $out) (i32.const 8192)))
      (i64.extend_i32_u (i32.sub (local.get $out) (i32.const 8192))))
    (i32.const 0)))
