//! `brume exec` as a user runs it: the real binary, real files, real pipes.

mod util;

mod exec;
