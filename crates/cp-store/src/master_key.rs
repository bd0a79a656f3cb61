//! The master key's check value, and re-sealing everything sealed with the key when it is
//! rotated. The store never sees a key: the caller checks and re-seals, the store finds and
//! writes the sealed values.

use uuid::Uuid;

use crate::Store;
use crate::db::{with_db, write_tx};
use crate::error::StoreResult;

const CHECK_VALUE: &str = "master_key_check";

/// A value sealed with the master key: what its associated data is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedRef {
    /// A secret's value.
    Secret { org: String, name: String },
    /// An integration's credentials.
    Integration { org: String, id: Uuid },
    /// A webhook's signing secret (`previous`: the one still signing during a rotation).
    Webhook { org: String, id: Uuid, previous: bool },
    /// A stored idempotent answer that carries a secret.
    Idempotent { org: String, key: String },
    /// A job's inbound webhook secret.
    Job { org: String, id: Uuid },
}

type SecretRow = (String, String, Vec<u8>);
type IdRow = (String, Uuid, Vec<u8>);
type WebhookRow = (String, Uuid, Vec<u8>, Option<Vec<u8>>);
type IdempotentRow = (String, String, Vec<u8>);

impl Store {
    /// The master key's check value, once one was stored.
    pub async fn master_key_check(&self) -> StoreResult<Option<String>> {
        Ok(with_db!(&self.db, pool =>
            sqlx::query_scalar("SELECT value FROM instance_settings WHERE name = $1")
                .bind(CHECK_VALUE).fetch_optional(pool).await)?)
    }

    /// Stores the master key's check value.
    pub async fn set_master_key_check(&self, check: &str) -> StoreResult<()> {
        with_db!(&self.db, pool =>
            sqlx::query("INSERT INTO instance_settings (name, value) VALUES ($1, $2) \
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value")
                .bind(CHECK_VALUE).bind(check).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// One sealed value, if there is any: a key can be tried on it when no check value was
    /// stored yet (a database from before check values).
    pub async fn any_sealed(&self) -> StoreResult<Option<(SealedRef, Vec<u8>)>> {
        let secret: Option<SecretRow> = with_db!(&self.db, pool =>
            sqlx::query_as("SELECT organization_id, name, ciphertext FROM secrets LIMIT 1").fetch_optional(pool).await)?;
        if let Some((org, name, bytes)) = secret {
            return Ok(Some((SealedRef::Secret { org, name }, bytes)));
        }
        let integration: Option<IdRow> = with_db!(&self.db, pool =>
            sqlx::query_as("SELECT organization_id, id, credentials FROM integrations WHERE credentials IS NOT NULL LIMIT 1")
                .fetch_optional(pool).await)?;
        if let Some((org, id, bytes)) = integration {
            return Ok(Some((SealedRef::Integration { org, id }, bytes)));
        }
        let webhook: Option<IdRow> = with_db!(&self.db, pool =>
            sqlx::query_as("SELECT organization_id, id, secret FROM webhooks LIMIT 1").fetch_optional(pool).await)?;
        if let Some((org, id, bytes)) = webhook {
            return Ok(Some((
                SealedRef::Webhook {
                    org,
                    id,
                    previous: false,
                },
                bytes,
            )));
        }
        let idempotent: Option<IdempotentRow> = with_db!(&self.db, pool =>
            sqlx::query_as("SELECT organization_id, idempotency_key, response_body FROM idempotency_keys \
                            WHERE sealed AND response_body IS NOT NULL LIMIT 1").fetch_optional(pool).await)?;
        Ok(idempotent.map(|(org, key, bytes)| (SealedRef::Idempotent { org, key }, bytes)))
    }

    /// Re-seals every sealed value with `reseal` and stores the new key's `check` value, in one
    /// transaction: either everything moves to the new key or nothing does. Answers how many
    /// values were re-sealed, or the first error `reseal` gave (then nothing changed).
    pub async fn reseal_all<E>(
        &self,
        check: &str,
        mut reseal: impl FnMut(&SealedRef, &[u8]) -> Result<Vec<u8>, E>,
    ) -> StoreResult<Result<u64, E>> {
        Ok(write_tx!(&self.db, tx, _pg => {
            let mut done = 0u64;
            let secrets: Vec<SecretRow> =
                sqlx::query_as("SELECT organization_id, name, ciphertext FROM secrets").fetch_all(&mut *tx).await?;
            let integrations: Vec<IdRow> = sqlx::query_as(
                "SELECT organization_id, id, credentials FROM integrations WHERE credentials IS NOT NULL")
                .fetch_all(&mut *tx).await?;
            let webhooks: Vec<WebhookRow> =
                sqlx::query_as("SELECT organization_id, id, secret, previous_secret FROM webhooks").fetch_all(&mut *tx).await?;
            let idempotent: Vec<IdempotentRow> = sqlx::query_as(
                "SELECT organization_id, idempotency_key, response_body FROM idempotency_keys \
                 WHERE sealed AND response_body IS NOT NULL")
                .fetch_all(&mut *tx).await?;
            let jobs: Vec<IdRow> = sqlx::query_as(
                "SELECT organization_id, id, webhook_secret FROM jobs WHERE webhook_secret IS NOT NULL")
                .fetch_all(&mut *tx).await?;
            let outcome: Result<(), E> = async {
                for (org, name, bytes) in secrets {
                    let sealed = match reseal(&SealedRef::Secret { org: org.clone(), name: name.clone() }, &bytes) {
                        Ok(s) => s,
                        Err(e) => return Ok(Err(e)),
                    };
                    sqlx::query("UPDATE secrets SET ciphertext = $3 WHERE organization_id = $1 AND name = $2")
                        .bind(&org).bind(&name).bind(sealed).execute(&mut *tx).await?;
                    done += 1;
                }
                for (org, id, bytes) in integrations {
                    let sealed = match reseal(&SealedRef::Integration { org: org.clone(), id }, &bytes) {
                        Ok(s) => s,
                        Err(e) => return Ok(Err(e)),
                    };
                    sqlx::query("UPDATE integrations SET credentials = $3 WHERE organization_id = $1 AND id = $2")
                        .bind(&org).bind(id).bind(sealed).execute(&mut *tx).await?;
                    done += 1;
                }
                for (org, id, secret, previous) in webhooks {
                    let current = SealedRef::Webhook { org: org.clone(), id, previous: false };
                    let secret = match reseal(&current, &secret) {
                        Ok(s) => s,
                        Err(e) => return Ok(Err(e)),
                    };
                    let previous = match previous {
                        Some(p) => match reseal(&SealedRef::Webhook { org: org.clone(), id, previous: true }, &p) {
                            Ok(s) => Some(s),
                            Err(e) => return Ok(Err(e)),
                        },
                        None => None,
                    };
                    sqlx::query("UPDATE webhooks SET secret = $3, previous_secret = $4 WHERE organization_id = $1 AND id = $2")
                        .bind(&org).bind(id).bind(secret).bind(previous).execute(&mut *tx).await?;
                    done += 1;
                }
                for (org, key, bytes) in idempotent {
                    let sealed = match reseal(&SealedRef::Idempotent { org: org.clone(), key: key.clone() }, &bytes) {
                        Ok(s) => s,
                        Err(e) => return Ok(Err(e)),
                    };
                    sqlx::query("UPDATE idempotency_keys SET response_body = $3 WHERE organization_id = $1 AND idempotency_key = $2")
                        .bind(&org).bind(&key).bind(sealed).execute(&mut *tx).await?;
                    done += 1;
                }
                for (org, id, bytes) in jobs {
                    let sealed = match reseal(&SealedRef::Job { org: org.clone(), id }, &bytes) {
                        Ok(s) => s,
                        Err(e) => return Ok(Err(e)),
                    };
                    sqlx::query("UPDATE jobs SET webhook_secret = $3 WHERE organization_id = $1 AND id = $2")
                        .bind(&org).bind(id).bind(sealed).execute(&mut *tx).await?;
                    done += 1;
                }
                Ok::<_, sqlx::Error>(Ok(()))
            }
            .await?;
            if let Err(e) = outcome {
                // Dropping the transaction rolls it back: nothing moved.
                return Ok(Err(e));
            }
            sqlx::query("INSERT INTO instance_settings (name, value) VALUES ($1, $2) \
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value")
                .bind(CHECK_VALUE).bind(check).execute(&mut *tx).await?;
            Ok(done)
        }))
    }
}
