;; `trap` hits `unreachable`: the call fails with a Wasm trap (RuntimeError).
(module
  (memory (export "memory") 1)
  (func (export "trap") (result i32)
    unreachable))
