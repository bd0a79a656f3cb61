//! The master key that seals secrets at rest: found, checked against the database, created
//! only for a database with nothing sealed yet, and rotated (`kubiya-cp rotate-master-key`).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cp_server::services::crypto::{Cipher, key_check_value, sealed_aad};
use cp_store::Store;

use crate::cli::{Global, MasterKeyArgs};

const MASTER_KEY_FILE: &str = "master.key";

/// Where the key comes from: the flag or variable holding it, else its file.
enum Source {
    Given(String),
    File(PathBuf),
}

fn source(args: &MasterKeyArgs, data_dir: &Path) -> Source {
    match &args.master_key {
        Some(hex_key) => Source::Given(hex_key.clone()),
        None => Source::File(
            args.master_key_file
                .clone()
                .unwrap_or_else(|| data_dir.join(MASTER_KEY_FILE)),
        ),
    }
}

/// The master key for `store`. A missing key file is created only when the database holds
/// nothing sealed; a key that does not match the database's check value is refused, so a
/// lost or swapped key stops the server at start instead of failing every decryption.
pub async fn load(args: &MasterKeyArgs, data_dir: &Path, store: &Store) -> anyhow::Result<[u8; 32]> {
    let key = match source(args, data_dir) {
        Source::Given(hex_key) => parse(&hex_key).context("--master-key / KUBIYA_CP_MASTER_KEY")?,
        Source::File(path) => match read_file(&path)? {
            Some(key) => key,
            None => {
                if store.any_sealed().await?.is_some() || store.master_key_check().await?.is_some() {
                    bail!(
                        "the master key file {} is missing, but this database holds values sealed with a \
                         master key. Restore the file (or pass the key with --master-key-file / \
                         KUBIYA_CP_MASTER_KEY); a new key would leave every secret unreadable",
                        path.display()
                    );
                }
                let key: [u8; 32] = rand::random();
                create_file(&path, &key)?;
                tracing::info!(path = %path.display(), "generated a new master key");
                key
            }
        },
    };
    let check = key_check_value(&key);
    match store.master_key_check().await? {
        Some(stored) if stored == check => {}
        Some(_) => bail!(
            "the master key does not match the one this database was sealed with. Use the key it was \
             sealed with (an interrupted `kubiya-cp rotate-master-key` leaves the new one in \
             <key file>.new)"
        ),
        None => {
            // A database from before check values: the key must open what is sealed.
            if let Some((at, sealed)) = store.any_sealed().await? {
                Cipher::new(&key)
                    .open(&sealed, &sealed_aad(&at))
                    .map_err(|_| anyhow::anyhow!("the master key does not open the values this database holds"))?;
            }
            store.set_master_key_check(&check).await?;
        }
    }
    Ok(key)
}

/// `kubiya-cp rotate-master-key`: a new key, every sealed value re-sealed with it in one
/// transaction, then the key file replaced. The new key is written to `<file>.new` first, so
/// an interruption between the commit and the rename leaves it recoverable.
pub async fn rotate(global: &Global, args: &MasterKeyArgs) -> anyhow::Result<()> {
    let path = match source(args, &global.data_dir) {
        Source::File(path) => path,
        Source::Given(_) => bail!(
            "rotate-master-key replaces a key file: run it with --master-key-file (not with the key \
             in KUBIYA_CP_MASTER_KEY), then give the server the new key"
        ),
    };
    let store = crate::admin::open(global).await?;
    let old = load(args, &global.data_dir, &store).await?;
    let new: [u8; 32] = rand::random();
    let staged = PathBuf::from(format!("{}.new", path.display()));
    create_file(&staged, &new).with_context(|| format!("a previous rotation left {}", staged.display()))?;
    let (old_cipher, new_cipher) = (Cipher::new(&old), Cipher::new(&new));
    let outcome = store
        .reseal_all(&key_check_value(&new), |at, sealed| {
            let aad = sealed_aad(at);
            let plain = old_cipher
                .open(sealed, &aad)
                .map_err(|_| anyhow::anyhow!("a value sealed at {at:?} does not open with the current key"))?;
            new_cipher
                .seal(&plain, &aad)
                .map_err(|e| anyhow::anyhow!("cannot seal with the new key: {e}"))
        })
        .await;
    let count = match outcome {
        Ok(Ok(count)) => count,
        Ok(Err(e)) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e.context("nothing was changed"));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(anyhow::Error::from(e).context("nothing was changed"));
        }
    };
    std::fs::rename(&staged, &path).with_context(|| {
        format!(
            "the database now uses the key in {}: move it to {}",
            staged.display(),
            path.display()
        )
    })?;
    store.close().await;
    eprintln!(
        "re-sealed {count} values with a new master key, now in {} (restart the servers with it)",
        path.display()
    );
    Ok(())
}

/// The key in `path`, or `None` when there is no such file. A file that group or others
/// may read is refused: the key opens every secret.
fn read_file(path: &Path) -> anyhow::Result<Option<[u8; 32]>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read the master key file {}", path.display())),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "the master key file {} may be read by group or others (mode {mode:03o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the master key file {}", path.display()))?;
    parse(text.trim())
        .with_context(|| format!("master key file {}", path.display()))
        .map(Some)
}

/// Writes a new key file, never over an existing one, readable by its owner only.
fn create_file(path: &Path, key: &[u8; 32]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the master key file {}", path.display()))?;
    writeln!(f, "{}", hex::encode(key))?;
    f.sync_all()?;
    Ok(())
}

fn parse(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(text).context("the master key must be 64 hex characters")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the master key must be 32 bytes (64 hex characters)"))
}
