pub mod bench;
pub mod convert;
pub mod data;
pub mod info;
pub mod launch;
pub mod logits;
pub mod plot;
pub mod train;
