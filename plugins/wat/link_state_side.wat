;; State a recycled linked module must not keep: bump adds one to a mutable global and to a byte of its
;; memory on a page no data segment writes (linked as "counter" by link_state_main.wat), and answers
;; global × 100 + byte: 101 on fresh instances.
(module
  (memory (export "memory") 2)
  (global $n (mut i32) (i32.const 0))
  (func (export "bump") (result i32)
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (i32.store8 (i32.const 70000) (i32.add (i32.load8_u (i32.const 70000)) (i32.const 1)))
    (i32.add (i32.mul (global.get $n) (i32.const 100)) (i32.load8_u (i32.const 70000)))))
