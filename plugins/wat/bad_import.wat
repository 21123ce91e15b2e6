;; Upload-validation fixture: a valid export, but imports Extism does not provide
;; (`env.abort`, what AssemblyScript emits without `--use abort=...`, and `foo.bar`).
(module
  (import "env" "abort" (func $abort (param i32 i32 i32 i32)))
  (import "foo" "bar" (func $bar))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (i32.const 0)))
