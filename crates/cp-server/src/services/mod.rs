//! Rules that span several repositories; handlers call these and stay thin.

pub mod catalog;
