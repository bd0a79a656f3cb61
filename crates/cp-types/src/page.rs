//! The one pagination shape: `limit`/`offset` (alias `skip`) in, `{items,total,limit,offset}` out.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::FieldIssue;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// Query parameters of every collection endpoint.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1..500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Rows to skip (default 0).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// Alias of `offset` used by the Python client.
    #[param(minimum = 0)]
    pub skip: Option<i64>,
}

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: i64,
    pub offset: i64,
}

impl PageParams {
    /// Applies defaults and bounds; `offset` wins over `skip` when both are given.
    pub fn validate(self) -> Result<PageRequest, Vec<FieldIssue>> {
        let mut issues = Vec::new();
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            issues.push(FieldIssue::new("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        let offset = self.offset.or(self.skip).unwrap_or(0);
        if offset < 0 {
            issues.push(FieldIssue::new("offset", "must be zero or more"));
        }
        if issues.is_empty() {
            Ok(PageRequest { limit, offset })
        } else {
            Err(issues)
        }
    }
}

/// One page of a collection. `total` counts every matching row, not only this page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, total: i64, req: PageRequest) -> Self {
        Self {
            items,
            total,
            limit: req.limit,
            offset: req.offset,
        }
    }

    /// A page of a list held in memory (static catalogs such as runtimes).
    pub fn of_slice(all: Vec<T>, req: PageRequest) -> Self {
        let total = all.len() as i64;
        let items = all
            .into_iter()
            .skip(req.offset.max(0) as usize)
            .take(req.limit.max(0) as usize)
            .collect();
        Page::new(items, total, req)
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            total: self.total,
            limit: self.limit,
            offset: self.offset,
        }
    }
}
