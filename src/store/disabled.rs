//! The store of a gateway whose built-in identity is off (`[identity] enabled = false`,
//! SPEC §10): nothing is stored, every call says so, and readiness does not depend on it.
//! The identity endpoints are not served then, so no request reaches these calls.

use super::{
    ApiKeyRow, Flow, RefreshRow, Revocation, Rotation, SessionInfo, StoreError, User, UserStore,
};

pub struct Disabled;

fn off<T>() -> Result<T, StoreError> {
    Err(StoreError::Backend(
        "the built-in identity is disabled ([identity] enabled = false)".into(),
    ))
}

impl UserStore for Disabled {
    fn create_user(&self, _: &str, _: &str, _: &[String]) -> Result<(), StoreError> {
        off()
    }
    fn get_user(&self, _: &str) -> Result<Option<User>, StoreError> {
        off()
    }
    fn set_password(&self, _: &str, _: &str) -> Result<bool, StoreError> {
        off()
    }
    fn set_roles(&self, _: &str, _: &[String]) -> Result<bool, StoreError> {
        off()
    }
    fn remove_user(&self, _: &str) -> Result<bool, StoreError> {
        off()
    }
    fn list_users(&self) -> Result<Vec<User>, StoreError> {
        off()
    }
    fn insert_refresh(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: u64,
        _: &SessionInfo,
    ) -> Result<(), StoreError> {
        off()
    }
    fn rotate_refresh(&self, _: &str, _: &str, _: u64, _: u64) -> Result<Rotation, StoreError> {
        off()
    }
    fn revoke_family(&self, _: &str, _: u64) -> Result<Rotation, StoreError> {
        off()
    }
    fn revoke_user(&self, _: &str, _: u64) -> Result<(), StoreError> {
        off()
    }
    /// No users, so no revocations: the revocation poller finds nothing, quietly.
    fn revocations_since(&self, _: u64) -> Result<Vec<Revocation>, StoreError> {
        Ok(Vec::new())
    }
    fn live_refresh_tokens(&self, _: u64) -> Result<Vec<RefreshRow>, StoreError> {
        off()
    }
    fn import_user(&self, _: &User) -> Result<bool, StoreError> {
        off()
    }
    fn import_refresh(&self, _: &RefreshRow) -> Result<bool, StoreError> {
        off()
    }
    fn import_revocation(&self, _: &Revocation) -> Result<bool, StoreError> {
        off()
    }
    /// Nothing to reach: a gateway without a store is ready as far as the store goes.
    fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn create_api_key(&self, _: &ApiKeyRow) -> Result<(), StoreError> {
        off()
    }
    fn list_api_keys(&self, _: Option<&str>) -> Result<Vec<ApiKeyRow>, StoreError> {
        off()
    }
    fn revoke_api_key(&self, _: &str, _: u64) -> Result<bool, StoreError> {
        off()
    }
    /// No users, so no keys: the key poll finds nothing, quietly.
    fn api_keys_since(&self, _: u64) -> Result<Vec<ApiKeyRow>, StoreError> {
        Ok(Vec::new())
    }
    fn touch_api_keys(&self, _: &[(String, u64)]) -> Result<(), StoreError> {
        Ok(())
    }
    fn import_api_key(&self, _: &ApiKeyRow) -> Result<bool, StoreError> {
        off()
    }
    fn put_flow(&self, _: &Flow, _: u64) -> Result<(), StoreError> {
        off()
    }
    fn take_flow(&self, _: &str, _: &str, _: u64) -> Result<Option<Flow>, StoreError> {
        off()
    }
    fn record_logout_jti(&self, _: &str, _: u64, _: u64) -> Result<bool, StoreError> {
        off()
    }
    fn logout_subjects(
        &self,
        _: &str,
        _: Option<&str>,
        _: Option<&str>,
        _: u64,
    ) -> Result<Vec<String>, StoreError> {
        off()
    }
}
