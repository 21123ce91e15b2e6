;; Upload-validation fixture: exports only a memory, no functions to call.
(module
  (memory (export "memory") 1))
