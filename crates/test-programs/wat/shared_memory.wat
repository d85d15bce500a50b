;; Uses the threads proposal, which the sandbox does not enable.
(module
  (memory (export "memory") 1 1 shared)
  (func (export "_start")))
