//! Loading: bytes → validated, compiled, pre-linked [`Program`].

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, InstancePre, Module, Precompiled};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::exec::{ComponentState, CoreState};
use crate::{ExecError, Profile};

/// The sha256 of a module's binary (never of its text form).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Hashes `wasm` bytes.
    pub fn of(wasm: &[u8]) -> Digest {
        Digest(Sha256::digest(wasm).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A string that is not a [`Digest`]: 64 hex digits, optionally after
/// `sha256:`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not a sha256 hex digest ({source}): {input:?}")]
pub struct DigestParseError {
    /// The text without its `sha256:` prefix.
    pub input: String,
    #[source]
    pub source: hex::FromHexError,
}

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.strip_prefix("sha256:").unwrap_or(s);
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|source| DigestParseError {
            input: s.to_owned(),
            source,
        })?;
        Ok(Digest(out))
    }
}

/// What a program is and how it is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// A core module exporting `_start` (WASI preview 1 command).
    P1Command,
    /// A component exporting `wasi:cli/run` (WASI preview 2 command).
    P2Command,
    /// A component exporting `wasi:http/incoming-handler` (a function).
    HttpProxy,
}

impl Shape {
    /// True for both command shapes (stdin/args/env in, stdout/stderr/exit out).
    pub fn is_command(self) -> bool {
        matches!(self, Shape::P1Command | Shape::P2Command)
    }
}

pub(crate) enum Pre {
    Core(InstancePre<CoreState>),
    Command(CommandPre<ComponentState>),
    Http(ProxyPre<ComponentState>),
}

pub(crate) struct ProgramInner {
    pub(crate) digest: Digest,
    pub(crate) profile: Profile,
    pub(crate) shape: Shape,
    /// Largest initial memory (bytes) and table (elements) any instance of
    /// the program declares, checked against limits before instantiating.
    pub(crate) initial_memory: u64,
    pub(crate) initial_table: u64,
    pub(crate) pre: Pre,
}

/// A compiled, validated and pre-linked module: cheap to clone and share
/// between concurrent executions, which all use the same machine code.
#[derive(Clone)]
pub struct Program(pub(crate) Arc<ProgramInner>);

impl Program {
    pub fn digest(&self) -> Digest {
        self.0.digest
    }
    pub fn shape(&self) -> Shape {
        self.0.shape
    }
    pub fn profile(&self) -> Profile {
        self.0.profile
    }
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("digest", &self.0.digest)
            .field("shape", &self.0.shape)
            .field("profile", &self.0.profile)
            .finish()
    }
}

/// Accepts the binary or text format and returns the binary.
pub(crate) fn to_binary(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, ExecError> {
    if bytes.starts_with(b"\0asm") {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    wat::parse_bytes(bytes).map_err(|e| {
        ExecError::InvalidModule(format!("neither a WebAssembly binary nor valid text: {e}"))
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Module,
    Component,
}

fn format_of(wasm: &[u8]) -> Result<Format, ExecError> {
    match wasm.get(4..8) {
        Some([1, 0, 0, 0]) => Ok(Format::Module),
        Some([0x0d, 0, 1, 0]) => Ok(Format::Component),
        Some(v) => Err(ExecError::InvalidModule(format!(
            "unsupported WebAssembly version/layer {v:02x?}"
        ))),
        None => Err(ExecError::InvalidModule(
            "truncated WebAssembly header".into(),
        )),
    }
}

/// The per-engine, per-digest location of a compiled artifact.
pub(crate) fn artifact_path(dir: &Path, engine: &Engine, digest: &Digest) -> PathBuf {
    dir.join(format!("{digest}{}", artifact_suffix(engine)))
}

/// What follows the digest in an artifact's file name for `engine`.
pub(crate) fn artifact_suffix(engine: &Engine) -> String {
    // `DefaultHasher::new()` uses fixed keys, so the name is stable for one
    // build of brume; a different wasmtime or config simply misses the cache.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("-{:016x}.cwasm", h.finish())
}

pub(crate) enum Compiled {
    Module(Module),
    Component(Component),
}

/// Compiles `wasm`, going through the on-disk artifact cache when there is one.
pub(crate) fn compile(
    engine: &Engine,
    cache_dir: Option<&Path>,
    digest: &Digest,
    wasm: &[u8],
) -> Result<Compiled, ExecError> {
    let format = format_of(wasm)?;
    let invalid = |e: wasmtime::Error| {
        pool_limit(&e).unwrap_or_else(|| ExecError::InvalidModule(format!("{e:#}")))
    };
    let Some(dir) = cache_dir else {
        return Ok(match format {
            Format::Module => Compiled::Module(Module::from_binary(engine, wasm).map_err(invalid)?),
            Format::Component => {
                Compiled::Component(Component::from_binary(engine, wasm).map_err(invalid)?)
            }
        });
    };
    let path = artifact_path(dir, engine, digest);
    match load_artifact(engine, &path) {
        Ok(Some(c)) => return Ok(c),
        Ok(None) => {}
        // An unreadable or corrupt artifact is rebuilt, never fatal.
        Err(ExecError::Internal(why)) => {
            tracing::warn!(path = %path.display(), %why, "discarding bad artifact");
            let _ = std::fs::remove_file(&path);
        }
        Err(e) => return Err(e),
    }
    let artifact = match format {
        Format::Module => engine.precompile_module(wasm),
        Format::Component => engine.precompile_component(wasm),
    }
    .map_err(invalid)?;
    write_atomically(&path, &artifact)
        .map_err(|e| ExecError::Internal(format!("write artifact {}: {e}", path.display())))?;
    load_artifact(engine, &path)?
        .ok_or_else(|| ExecError::Internal(format!("artifact {} vanished", path.display())))
}

/// Loads a compiled artifact if one exists at `path`.
pub(crate) fn load_artifact(engine: &Engine, path: &Path) -> Result<Option<Compiled>, ExecError> {
    let internal = |e: wasmtime::Error| {
        pool_limit(&e).unwrap_or_else(|| {
            ExecError::Internal(format!("load artifact {}: {e:#}", path.display()))
        })
    };
    let kind = match Engine::detect_precompiled_file(path) {
        Ok(k) => k,
        Err(_) if !path.exists() => return Ok(None),
        Err(e) => return Err(internal(e)),
    };
    // SAFETY: the cache directory belongs to this process's operator and
    // holds only artifacts this module wrote (atomically, named by digest and
    // engine hash). `deserialize_file` additionally checks that the artifact
    // was produced by a compatible engine.
    let compiled = match kind {
        None => return Ok(None),
        Some(Precompiled::Module) => {
            Compiled::Module(unsafe { Module::deserialize_file(engine, path) }.map_err(internal)?)
        }
        Some(Precompiled::Component) => Compiled::Component(
            unsafe { Component::deserialize_file(engine, path) }.map_err(internal)?,
        ),
    };
    Ok(Some(compiled))
}

/// The pooling allocator checks declared memories and tables against the
/// sandbox-wide maxima whenever a module is created (compiled or loaded).
/// wasmtime reports that as a plain error, recognisable only by its text.
fn pool_limit(e: &wasmtime::Error) -> Option<ExecError> {
    let full = format!("{e:#}");
    if !full.contains("pooling allocator") {
        return None;
    }
    let cause = e.chain().last().map_or(full, |c| c.to_string());
    Some(ExecError::MemoryLimit(format!(
        "module exceeds the sandbox's limits: {cause}"
    )))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Import namespaces a core module may use.
const CORE_IMPORT_MODULES: &[&str] = &["wasi_snapshot_preview1"];

/// Checks imports and shape, then pre-links against the sandbox's linkers.
pub(crate) fn prepare(
    linkers: &crate::Linkers,
    digest: Digest,
    profile: Profile,
    compiled: Compiled,
) -> Result<Program, ExecError> {
    let engine = &linkers.engine;
    let link_err = |e: wasmtime::Error| ExecError::ImportNotAllowed(format!("{e:#}"));
    let inner = match compiled {
        Compiled::Module(module) => {
            let bad: Vec<String> = module
                .imports()
                .filter(|i| !CORE_IMPORT_MODULES.contains(&i.module()))
                .map(|i| format!("{}::{}", i.module(), i.name()))
                .collect();
            if !bad.is_empty() {
                return Err(ExecError::ImportNotAllowed(format!(
                    "only WASI preview 1 may be imported, found {}",
                    bad.join(", ")
                )));
            }
            if !matches!(
                module.get_export("_start"),
                Some(wasmtime::ExternType::Func(_))
            ) {
                return Err(ExecError::InvalidModule(
                    "core module does not export a `_start` function (expected a WASI command)"
                        .into(),
                ));
            }
            let res = module.resources_required();
            let pre = linkers.core.instantiate_pre(&module).map_err(link_err)?;
            ProgramInner {
                digest,
                profile,
                shape: Shape::P1Command,
                initial_memory: res.max_initial_memory_size.unwrap_or(0),
                initial_table: res.max_initial_table_size.unwrap_or(0),
                pre: Pre::Core(pre),
            }
        }
        Compiled::Component(component) => {
            let ty = component.component_type();
            let bad: Vec<String> = ty
                .imports(engine)
                .map(|(name, _)| name)
                .filter(|name| !name.starts_with("wasi:"))
                .map(str::to_owned)
                .collect();
            if !bad.is_empty() {
                return Err(ExecError::ImportNotAllowed(format!(
                    "only WASI and wasi:http interfaces may be imported, found {}",
                    bad.join(", ")
                )));
            }
            let exports: Vec<&str> = ty.exports(engine).map(|(n, _)| n).collect();
            let has = |prefix: &str| exports.iter().any(|n| n.starts_with(prefix));
            let res = component.resources_required();
            let initial_memory = res
                .as_ref()
                .and_then(|r| r.max_initial_memory_size)
                .unwrap_or(0);
            let initial_table = res
                .as_ref()
                .and_then(|r| r.max_initial_table_size)
                .unwrap_or(0);
            let pre = linkers
                .component
                .instantiate_pre(&component)
                .map_err(link_err)?;
            let (shape, pre) = if has("wasi:http/incoming-handler@") {
                let pre = ProxyPre::new(pre).map_err(|e| {
                    ExecError::InvalidModule(format!("not a wasi:http proxy: {e:#}"))
                })?;
                (Shape::HttpProxy, Pre::Http(pre))
            } else if has("wasi:cli/run@") {
                let pre = CommandPre::new(pre).map_err(|e| {
                    ExecError::InvalidModule(format!("not a wasi:cli command: {e:#}"))
                })?;
                (Shape::P2Command, Pre::Command(pre))
            } else {
                return Err(ExecError::InvalidModule(format!(
                    "component exports neither wasi:cli/run nor wasi:http/incoming-handler (exports: {})",
                    if exports.is_empty() {
                        "none".to_string()
                    } else {
                        exports.join(", ")
                    }
                )));
            };
            ProgramInner {
                digest,
                profile,
                shape,
                initial_memory,
                initial_table,
                pre,
            }
        }
    };
    Ok(Program(Arc::new(inner)))
}
