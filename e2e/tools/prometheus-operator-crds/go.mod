// Wrapper module: pins prometheus-operator v0.85.0 so that e2e/tools/install.sh can fetch its
// PrometheusRule CRD (example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml)
// from the checksum-verified module. Nothing is built from it.
module strata.invalid/e2e/tools/prometheus-operator-crds

go 1.24.0

require github.com/prometheus-operator/prometheus-operator v0.85.0
