;; Hostile: `spin` never returns. The engine must interrupt it (timeout) without hanging the server.
(module
  (memory (export "memory") 1)
  (func (export "spin") (result i32)
    (loop $forever (br $forever))
    (i32.const 0)))
