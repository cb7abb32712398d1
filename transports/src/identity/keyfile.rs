//! Secret key files: atomic, private creation and format-detecting loading.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::{Zeroize as _, Zeroizing};

use super::error::{KeyFileError, KeyParseError};
use super::{PublicKey, SecretKey};

/// Largest accepted key file, in bytes (a JSON key file is about 170 bytes).
pub const MAX_KEY_FILE_LEN: u64 = 4096;

/// On-disk format of a secret key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyFormat {
    /// One line: the 64 hex characters of the secret seed, then `\n`.
    Hex,
    /// A JSON object `{"public_key": "<64 hex>", "secret_key": "<64 hex>"}` (plus newline).
    /// `public_key` is optional on load, but if present it must match the secret key.
    Json,
}

/// Something suspicious noticed while loading a key file (also logged with `tracing::warn!`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFileWarning {
    /// The file grants permissions to group or others (see [`permissions_too_open`]).
    PermissionsTooOpen {
        /// The file's permission bits (`mode & 0o777`).
        mode: u32,
    },
}

/// A key loaded by [`SecretKey::load_detailed`], with what was noticed on the way.
#[derive(Debug)]
#[non_exhaustive]
pub struct LoadedKey {
    /// The key.
    pub key: SecretKey,
    /// The detected file format.
    pub format: KeyFormat,
    /// Warnings (already logged). Empty for a well-kept file.
    pub warnings: Vec<KeyFileWarning>,
}

/// Whether Unix permission bits `mode` are too open for a secret key file: any permission for
/// group or others (read, write or execute; `mode & 0o077 != 0`). Key files are created `0600`.
#[must_use]
pub const fn permissions_too_open(mode: u32) -> bool {
    mode & 0o077 != 0
}

impl SecretKey {
    /// Saves this key to a new file at `path`; fails with [`KeyFileError::AlreadyExists`] if
    /// `path` exists (never overwrites).
    ///
    /// The content is written to a temporary file in the same directory, created with mode
    /// `0600` from the start (on Unix), fsynced, then hard-linked into place (which fails
    /// atomically if `path` exists) and the directory fsynced, so `path` never holds a partial
    /// key and is never readable by others. The filesystem must support hard links.
    ///
    /// # Errors
    ///
    /// [`KeyFileError::AlreadyExists`] or [`KeyFileError::Io`] (with the path involved).
    pub fn save(&self, path: impl AsRef<Path>, format: KeyFormat) -> Result<(), KeyFileError> {
        write_private_atomically(path.as_ref(), &self.encode_file(format), Replace::No)
    }

    /// Like [`save`](Self::save) but atomically replaces an existing file at `path` (rename).
    ///
    /// # Errors
    ///
    /// [`KeyFileError::Io`] (with the path involved).
    pub fn save_replacing(
        &self,
        path: impl AsRef<Path>,
        format: KeyFormat,
    ) -> Result<(), KeyFileError> {
        write_private_atomically(path.as_ref(), &self.encode_file(format), Replace::Yes)
    }

    /// Generates a new key and [`save`](Self::save)s it to `path` (which must not exist).
    ///
    /// # Errors
    ///
    /// [`KeyFileError::Random`], [`KeyFileError::AlreadyExists`] or [`KeyFileError::Io`].
    pub fn generate_and_save(
        path: impl AsRef<Path>,
        format: KeyFormat,
    ) -> Result<Self, KeyFileError> {
        let key = Self::generate()?;
        key.save(path, format)?;
        Ok(key)
    }

    /// Loads a key file written by [`save`](Self::save) (format detected: a JSON object, or a
    /// single hex line; surrounding whitespace is ignored). Warnings are logged.
    ///
    /// # Errors
    ///
    /// See [`load_detailed`](Self::load_detailed).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyFileError> {
        Self::load_detailed(path).map(|loaded| loaded.key)
    }

    /// Like [`load`](Self::load), also returning the detected format and the warnings (on Unix:
    /// [`KeyFileWarning::PermissionsTooOpen`] if group/others have any permission on the file).
    ///
    /// # Errors
    ///
    /// [`KeyFileError::Io`], [`TooLarge`](KeyFileError::TooLarge) (over [`MAX_KEY_FILE_LEN`]),
    /// [`Parse`](KeyFileError::Parse), or [`Mismatch`](KeyFileError::Mismatch) when a JSON
    /// file's `public_key` does not belong to its `secret_key`.
    pub fn load_detailed(path: impl AsRef<Path>) -> Result<LoadedKey, KeyFileError> {
        let path = path.as_ref();
        let io_err = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let mut warnings = Vec::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = file.metadata().map_err(io_err)?.permissions().mode() & 0o777;
            if permissions_too_open(mode) {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:04o}"),
                    "secret key file is accessible by group or others; it should be mode 0600"
                );
                warnings.push(KeyFileWarning::PermissionsTooOpen { mode });
            }
        }
        // Sized up front so the secret is never copied by a reallocation; zeroized on drop.
        let mut content = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN as usize + 1));
        file.take(MAX_KEY_FILE_LEN + 1)
            .read_to_end(&mut content)
            .map_err(io_err)?;
        if content.len() as u64 > MAX_KEY_FILE_LEN {
            return Err(KeyFileError::TooLarge {
                path: path.to_path_buf(),
                max: MAX_KEY_FILE_LEN,
            });
        }
        let parse_err = |source| KeyFileError::Parse {
            path: path.to_path_buf(),
            source,
        };
        let text = std::str::from_utf8(&content)
            .map_err(|_| parse_err(KeyParseError::NotUtf8))?
            .trim();
        if text.is_empty() {
            return Err(parse_err(KeyParseError::Empty));
        }
        let (key, format) = if text.starts_with('{') {
            let json: KeyFileJson = serde_json::from_str(text).map_err(|e| {
                parse_err(KeyParseError::Json {
                    message: e.to_string(),
                })
            })?;
            let key = Self::from_hex(&json.secret_key)
                .map_err(|e| parse_err(KeyParseError::SecretKey(e)))?;
            if let Some(stored) = json.public_key.as_deref() {
                let stored: PublicKey = stored
                    .parse()
                    .map_err(|e| parse_err(KeyParseError::PublicKey(e)))?;
                let derived = key.public_key();
                if stored != derived {
                    return Err(KeyFileError::Mismatch {
                        path: path.to_path_buf(),
                        stored: Box::new(stored),
                        derived: Box::new(derived),
                    });
                }
            }
            (key, KeyFormat::Json)
        } else {
            let key = Self::from_hex(text).map_err(|e| parse_err(KeyParseError::SecretKey(e)))?;
            (key, KeyFormat::Hex)
        };
        Ok(LoadedKey {
            key,
            format,
            warnings,
        })
    }

    fn encode_file(&self, format: KeyFormat) -> Zeroizing<String> {
        let secret = self.to_hex();
        let mut out = Zeroizing::new(String::with_capacity(256));
        // Writing into a String cannot fail.
        let _ = match format {
            KeyFormat::Hex => writeln!(out, "{}", secret.as_str()),
            KeyFormat::Json => writeln!(
                out,
                "{{\n  \"public_key\": \"{}\",\n  \"secret_key\": \"{}\"\n}}",
                self.public_key(),
                secret.as_str()
            ),
        };
        out
    }
}

/// The JSON key file. Unknown fields are ignored (room for later additions).
#[derive(serde::Deserialize)]
struct KeyFileJson {
    secret_key: String,
    #[serde(default)]
    public_key: Option<String>,
}

impl Drop for KeyFileJson {
    fn drop(&mut self) {
        self.secret_key.zeroize();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    No,
    Yes,
}

/// Removes the temporary file when dropped while armed (on every error path, and after
/// hard-linking).
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Err(e) = fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove temporary key file");
            }
        }
    }
}

fn temp_name(file_name: &std::ffi::OsStr) -> std::ffi::OsString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r = getrandom::u64().unwrap_or(0);
    let mut name = std::ffi::OsString::from(".");
    name.push(file_name);
    name.push(format!(".tmp-{}-{n}-{r:016x}", std::process::id()));
    name
}

fn write_private_atomically(
    path: &Path,
    content: &str,
    replace: Replace,
) -> Result<(), KeyFileError> {
    let io_at = |p: &Path| {
        let p = p.to_path_buf();
        move |source| KeyFileError::Io { path: p, source }
    };
    let Some(file_name) = path.file_name() else {
        return Err(io_at(path)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "key file path has no file name",
        )));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if replace == Replace::No && fs::symlink_metadata(path).is_ok() {
        // Early, friendly check; the hard link below is the race-free one.
        return Err(KeyFileError::AlreadyExists {
            path: path.to_path_buf(),
        });
    }

    let mut attempts = 0;
    let (mut file, mut temp) = loop {
        let temp_path = dir.join(temp_name(file_name));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            // Applied at creation (then narrowed by the umask): never readable by others.
            options.mode(0o600);
        }
        match options.open(&temp_path) {
            Ok(file) => {
                break (
                    file,
                    TempFile {
                        path: temp_path,
                        armed: true,
                    },
                );
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
            Err(e) => return Err(io_at(&temp_path)(e)),
        }
    };
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_at(&temp.path))?;
    drop(file);

    match replace {
        Replace::Yes => {
            fs::rename(&temp.path, path).map_err(io_at(path))?;
            // Renamed away: nothing left to clean up.
            temp.armed = false;
        }
        Replace::No => match fs::hard_link(&temp.path, path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(KeyFileError::AlreadyExists {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(io_at(path)(e)),
        },
    }
    // Unlink the temporary name (if still armed) before syncing the directory.
    drop(temp);
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))?;
    Ok(())
}
