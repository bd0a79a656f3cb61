//! Turning "rows with a `COUNT(*) OVER ()` column" into a [`Page`].

use std::future::Future;

use cp_types::Page;
use cp_types::page::PageRequest;

use crate::error::StoreResult;

/// Rows of a list query that also selected `COUNT(*) OVER () AS total`.
pub(crate) trait Counted {
    fn total(&self) -> i64;
}

/// Builds the page. The window count rides on every row, so one query serves both the page and
/// the total; only a page past the end (no rows) needs the separate `count` query.
pub(crate) async fn page_of<R: Counted, T>(
    rows: Vec<R>,
    req: PageRequest,
    count: impl Future<Output = StoreResult<i64>>,
    convert: impl FnMut(R) -> StoreResult<T>,
) -> StoreResult<Page<T>> {
    let total = match rows.first() {
        Some(r) => r.total(),
        None if req.offset == 0 => 0,
        None => count.await?,
    };
    let items = rows.into_iter().map(convert).collect::<StoreResult<Vec<T>>>()?;
    Ok(Page::new(items, total, req))
}

macro_rules! counted {
    ($($row:ty),+) => { $(impl $crate::page::Counted for $row { fn total(&self) -> i64 { self.total } })+ };
}
pub(crate) use counted;
