//! Turning the rows of one page into a [`Page`] with the total of all matching rows.

use std::future::Future;

use cp_types::Page;
use cp_types::page::PageRequest;

use crate::error::StoreResult;

/// Builds the page. A page that is not full tells the total by itself (offset + rows), so the
/// `count` query runs only for a full page or one past the end. A separate `COUNT(*)` is used
/// rather than a `COUNT(*) OVER ()` column: on SQLite the window forces a temporary sort of
/// every matching row and doubled the cost of listing 100 projects.
pub(crate) async fn page_of<R, T>(
    rows: Vec<R>,
    req: PageRequest,
    count: impl Future<Output = StoreResult<i64>>,
    convert: impl FnMut(R) -> StoreResult<T>,
) -> StoreResult<Page<T>> {
    let n = rows.len() as i64;
    let total = if n < req.limit && (n > 0 || req.offset == 0) {
        req.offset + n
    } else {
        count.await?
    };
    let items = rows.into_iter().map(convert).collect::<StoreResult<Vec<T>>>()?;
    Ok(Page::new(items, total, req))
}
