//! The StoreAPI (`thanos.Store`) and Info services over a [`crate::blockset::BlockSet`].
