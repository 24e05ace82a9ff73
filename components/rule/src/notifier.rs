//! Alertmanager client (API v2): a bounded queue, retries, several Alertmanagers.
