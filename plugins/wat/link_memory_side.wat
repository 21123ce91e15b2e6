;; Owns the memory link_memory_main.wat imports (linked as "mem_side"): its data segment and what
;; stamp writes are read by main, and what main writes is summed here.
(module
  (memory (export "memory") 1)
  (data (i32.const 0) "shared: ")

  ;; Writes "from side #" at 64 followed by a counter kept in memory at 200 (1 on a fresh memory).
  (func (export "stamp")
    (i32.store8 (i32.const 200) (i32.add (i32.load8_u (i32.const 200)) (i32.const 1)))
    (i64.store (i32.const 64) (i64.const 0x6973206d6f726620)) ;; " from si"
    (i32.store16 (i32.const 72) (i32.const 0x6564)) ;; "de"
    (i32.store8 (i32.const 74) (i32.const 0x23)) ;; "#"
    (i32.store8 (i32.const 75) (i32.add (i32.const 48) (i32.load8_u (i32.const 200)))))

  ;; The sum of `len` bytes at `ptr`.
  (func (export "sum") (param $ptr i32) (param $len i32) (result i32)
    (local $s i32) (local $i i32)
    (block $done
      (loop $add
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $s (i32.add (local.get $s) (i32.load8_u (i32.add (local.get $ptr) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $add)))
    (local.get $s)))
