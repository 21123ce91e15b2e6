;; Hostile: `grow` grows linear memory one page (64 KiB) at a time, touching each new page, towards
;; the wasm32 maximum of 65536 pages (4 GiB). When a grow is refused it traps, so the engine sees
;; a failed call rather than a success.
(module
  (memory (export "memory") 1)
  (func (export "grow") (result i32)
    (local $previousPages i32)
    (loop $more
      (local.set $previousPages (memory.grow (i32.const 1)))
      (if (i32.eq (local.get $previousPages) (i32.const -1))
        (then unreachable))
      ;; Write into the new page so it is really committed, not just reserved.
      (i32.store8 (i32.mul (local.get $previousPages) (i32.const 65536)) (i32.const 1))
      (br $more))
    (i32.const 0)))
