;; Stores the bits of a computed NaN: canonical only when NaNs are canonicalized.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; f64 NaN with a payload, through an arithmetic op
    (i64.store (i32.const 100)
      (i64.reinterpret_f64 (f64.add (f64.reinterpret_i64 (i64.const 0x7ff8000000000123)) (f64.const 1))))
    ;; iovec at 0: ptr=100 len=8
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 200)))))
