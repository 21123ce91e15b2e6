;; Fresh-state probe for page-level resets: `write` writes to memory by every path a plugin has
;; (each store width, SIMD and atomic stores, memory.fill/copy, memory.grow, and the WASI functions
;; that write into linear memory); `scan` reports what memory holds. A fresh instance's `scan` is
;; the reference: after any `write`, the next call's `scan` must report exactly that again.
;;
;; Memory: 64 pages (4 MiB), grows on request. Data segments put non-zero bytes on pages 2, 10, 33
;; and at the very end of page 63, so a page restored to zeros instead of its snapshot shows too.
;;
;; `write` input: records of 9 bytes, [method u8][address u32 LE][length u32 LE]; written values are
;; 0xA5 bytes (or what WASI writes). Methods:
;;   1 i32.store8   2 i32.store16   3 i32.store   4 i64.store8   5 i64.store16   6 i64.store32
;;   7 i64.store    8 f32.store     9 f64.store   10 v128.store  11-14 v128.store{8,16,32,64}_lane
;;   15 i32.atomic.store  16 i64.atomic.store8  17 i32.atomic.rmw.add  18 i64.atomic.rmw.cmpxchg
;;   19 i64.store with offset=70000 (at address + 70000)
;;   20 memory.fill (length bytes)  21 memory.copy from page 2's segment (length bytes, at most 256)
;;   30 fd_read nread  31 random_get (length bytes)  32 clock_time_get  33 clock_res_get
;;   34 args_sizes_get (address, address + 4)  35 environ_sizes_get (address, address + 4)
;;   36 fd_fdstat_get (24 bytes)  37 fd_write's nwritten (its iovec lives on page 1)
;;   40 memory.grow by `length` pages (address ignored)
;; Output: "ok".
;;
;; `scan` input: the number of pages to grow memory to first (decimal; at least its size). Output:
;; "<memory.size before growing>:<one 8-hex-digit hash per page>".
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_res_get" (func $clock_res_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 64)

  (data (i32.const 0x20000) "page two: fresh data segment, restored after every call. 0123456789abcdefghijklmnopqrstuvwxyz")
  (data (i32.const 0xa0000) "page ten: another segment, ~!@#$%^&*()_+ with punctuation and UPPER case letters too")
  (data (i32.const 0x210000) "page thirty-three: 33333333333333333333333333333333333333333333333333333333333333")
  (data (i32.const 0x3fffc0) "the last 64 bytes of page 63, up to the end of the memory.....!")

  (func $u32 (param $at i64) (result i32)
    (i32.or
      (i32.or (call $input_load_u8 (local.get $at))
              (i32.shl (call $input_load_u8 (i64.add (local.get $at) (i64.const 1))) (i32.const 8)))
      (i32.or (i32.shl (call $input_load_u8 (i64.add (local.get $at) (i64.const 2))) (i32.const 16))
              (i32.shl (call $input_load_u8 (i64.add (local.get $at) (i64.const 3))) (i32.const 24)))))

  (func $output (param $at i32) (param $len i32)
    (local $block i64) (local $i i32)
    (local.set $block (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $block) (i64.extend_i32_u (local.get $i)))
        (i32.load8_u (i32.add (local.get $at) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $output_set (local.get $block) (i64.extend_i32_u (local.get $len))))

  (func $ok
    (local $block i64)
    (local.set $block (call $alloc (i64.const 2)))
    (call $store_u8 (local.get $block) (i32.const 0x6f))
    (call $store_u8 (i64.add (local.get $block) (i64.const 1)) (i32.const 0x6b))
    (call $output_set (local.get $block) (i64.const 2)))

  (func $write_one (param $method i32) (param $a i32) (param $n i32)
    (local $v v128)
    (local.set $v (v128.const i32x4 0xa5a5a5a5 0xa5a5a5a5 0xa5a5a5a5 0xa5a5a5a5))
    (block $done
      (block $m40 (block $m37 (block $m36 (block $m35 (block $m34 (block $m33 (block $m32 (block $m31 (block $m30
      (block $m21 (block $m20 (block $m19 (block $m18 (block $m17 (block $m16 (block $m15 (block $m14 (block $m13
      (block $m12 (block $m11 (block $m10 (block $m9 (block $m8 (block $m7 (block $m6 (block $m5 (block $m4 (block $m3
      (block $m2 (block $m1 (block $none
        (br_table $none $m1 $m2 $m3 $m4 $m5 $m6 $m7 $m8 $m9 $m10 $m11 $m12 $m13 $m14 $m15 $m16 $m17 $m18 $m19
                  $m20 $m21 $none $none $none $none $none $none $none $none
                  $m30 $m31 $m32 $m33 $m34 $m35 $m36 $m37 $none $none $m40 $none (local.get $method)))
        (unreachable))
        (i32.store8 (local.get $a) (i32.const 0xa5)) (br $done))
        (i32.store16 (local.get $a) (i32.const 0xa5a5)) (br $done))
        (i32.store (local.get $a) (i32.const 0xa5a5a5a5)) (br $done))
        (i64.store8 (local.get $a) (i64.const 0xa5)) (br $done))
        (i64.store16 (local.get $a) (i64.const 0xa5a5)) (br $done))
        (i64.store32 (local.get $a) (i64.const 0xa5a5a5a5)) (br $done))
        (i64.store (local.get $a) (i64.const 0xa5a5a5a5a5a5a5a5)) (br $done))
        (f32.store (local.get $a) (f32.reinterpret_i32 (i32.const 0xa5a5a5a5))) (br $done))
        (f64.store (local.get $a) (f64.reinterpret_i64 (i64.const 0xa5a5a5a5a5a5a5a5))) (br $done))
        (v128.store (local.get $a) (local.get $v)) (br $done))
        (v128.store8_lane 3 (local.get $a) (local.get $v)) (br $done))
        (v128.store16_lane 2 (local.get $a) (local.get $v)) (br $done))
        (v128.store32_lane 1 (local.get $a) (local.get $v)) (br $done))
        (v128.store64_lane 0 (local.get $a) (local.get $v)) (br $done))
        (i32.atomic.store (local.get $a) (i32.const 0xa5a5a5a5)) (br $done))
        (i64.atomic.store8 (local.get $a) (i64.const 0xa5)) (br $done))
        (drop (i32.atomic.rmw.add (local.get $a) (i32.const 0xa5a5a5a5))) (br $done))
        (drop (i64.atomic.rmw.cmpxchg (local.get $a) (i64.atomic.load (local.get $a)) (i64.const 0xa5a5a5a5a5a5a5a5))) (br $done))
        (i64.store offset=70000 (local.get $a) (i64.const 0xa5a5a5a5a5a5a5a5)) (br $done))
        (memory.fill (local.get $a) (i32.const 0xa5) (local.get $n)) (br $done))
        (memory.copy (local.get $a) (i32.const 0x20000) (local.get $n)) (br $done))
        (drop (call $fd_read (i32.const 0) (i32.const 0x10000) (i32.const 1) (local.get $a))) (br $done))
        (drop (call $random_get (local.get $a) (local.get $n))) (br $done))
        (drop (call $clock_time_get (i32.const 0) (i64.const 1) (local.get $a))) (br $done))
        (drop (call $clock_res_get (i32.const 0) (local.get $a))) (br $done))
        (drop (call $args_sizes_get (local.get $a) (i32.add (local.get $a) (i32.const 4)))) (br $done))
        (drop (call $environ_sizes_get (local.get $a) (i32.add (local.get $a) (i32.const 4)))) (br $done))
        (drop (call $fd_fdstat_get (i32.const 1) (local.get $a))) (br $done))
        ;; The iovec (page 1) points at page 2's segment; fd_write logs it and writes nwritten at $a.
        (i32.store (i32.const 0x10000) (i32.const 0x20000))
        (i32.store (i32.const 0x10004) (i32.const 4))
        (drop (call $fd_write (i32.const 1) (i32.const 0x10000) (i32.const 1) (local.get $a))) (br $done))
        (drop (memory.grow (local.get $n)))))

  (func (export "write") (result i32)
    (local $at i64) (local $len i64)
    (local.set $len (call $input_length))
    (block $done (loop $next
      (br_if $done (i64.gt_u (i64.add (local.get $at) (i64.const 9)) (local.get $len)))
      (call $write_one
        (call $input_load_u8 (local.get $at))
        (call $u32 (i64.add (local.get $at) (i64.const 1)))
        (call $u32 (i64.add (local.get $at) (i64.const 5))))
      (local.set $at (i64.add (local.get $at) (i64.const 9)))
      (br $next)))
    (call $ok)
    (i32.const 0))

  ;; Writes `value` as 8 hex digits at `at`.
  (func $hex8 (param $at i32) (param $value i32)
    (local $i i32) (local $digit i32)
    (loop $next
      (local.set $digit (i32.and (i32.shr_u (local.get $value) (i32.sub (i32.const 28) (i32.shl (local.get $i) (i32.const 2)))) (i32.const 15)))
      (i32.store8 (i32.add (local.get $at) (local.get $i))
        (i32.add (local.get $digit) (select (i32.const 48) (i32.const 87) (i32.lt_u (local.get $digit) (i32.const 10)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 8)))))

  (func (export "scan") (result i32)
    (local $len i64) (local $i i64) (local $want i32) (local $before i32) (local $size i32)
    (local $page i32) (local $at i32) (local $end i32) (local $h i64) (local $out i32) (local $cursor i32)
    (local.set $len (call $input_length))
    (block $parsed (loop $digit
      (br_if $parsed (i64.ge_u (local.get $i) (local.get $len)))
      (local.set $want (i32.add (i32.mul (local.get $want) (i32.const 10))
        (i32.sub (call $input_load_u8 (local.get $i)) (i32.const 48))))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $digit)))
    (local.set $before (memory.size))
    (if (i32.gt_u (local.get $want) (local.get $before))
      (then (drop (memory.grow (i32.sub (local.get $want) (local.get $before))))))
    (local.set $size (memory.size))
    ;; The report goes after the scanned pages: grow one more page for it (not hashed).
    (local.set $out (i32.shl (local.get $size) (i32.const 16)))
    (drop (memory.grow (i32.const 1)))
    (call $hex8 (local.get $out) (local.get $before))
    (i32.store8 (i32.add (local.get $out) (i32.const 8)) (i32.const 58)) ;; ':'
    (local.set $cursor (i32.add (local.get $out) (i32.const 9)))
    (block $pages_done (loop $pages
      (br_if $pages_done (i32.ge_u (local.get $page) (local.get $size)))
      (local.set $at (i32.shl (local.get $page) (i32.const 16)))
      (local.set $end (i32.add (local.get $at) (i32.const 65536)))
      (local.set $h (i64.const 0xcbf29ce484222325))
      (loop $words
        (local.set $h (i64.mul (i64.xor (local.get $h) (i64.load (local.get $at))) (i64.const 0x100000001b3)))
        (local.set $at (i32.add (local.get $at) (i32.const 8)))
        (br_if $words (i32.lt_u (local.get $at) (local.get $end))))
      (call $hex8 (local.get $cursor) (i32.wrap_i64 (i64.xor (local.get $h) (i64.shr_u (local.get $h) (i64.const 32)))))
      (local.set $cursor (i32.add (local.get $cursor) (i32.const 8)))
      (local.set $page (i32.add (local.get $page) (i32.const 1)))
      (br $pages)))
    (call $output (local.get $out) (i32.sub (local.get $cursor) (local.get $out)))
    (i32.const 0)))
