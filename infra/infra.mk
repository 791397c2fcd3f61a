# Offline checks of the Azure templates (Bicep), for the main Makefile:
#     include infra/infra.mk        (its test target runs `$(MAKE) infra-check`)
# or on their own from the repository root:
#     make -f infra/infra.mk infra-check
#
# checkov pins many packages, so it lives in its own virtual environment (.venv-checkov), created
# on first use. A stamp file named after the pinned version makes later runs skip the install;
# changing CHECKOV_VERSION re-creates the environment. The target fails on any failed check, on
# any .bicep file checkov cannot parse (checkov itself only reports those and exits 0), and when
# no resource was scanned at all. A skipped check needs a `//checkov:skip=CKV_...:reason` comment
# inside the resource it applies to.
# The templates' own properties (shared key off, local auth off, RBAC, role scopes, app settings
# versus o365ingest/settings.py) are asserted by pytest in tests/infra.

INFRA_MK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
INFRA_ROOT := $(patsubst %/,%,$(dir $(abspath $(INFRA_MK_DIR))))
CHECKOV_VERSION ?= 3.3.30
CHECKOV_PYTHON ?= python3.11
CHECKOV_VENV ?= $(INFRA_ROOT)/.venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-checkov-$(CHECKOV_VERSION)
CHECKOV_REPORT := $(CHECKOV_VENV)/last-bicep-report.json

# No platform look-ups or uploads: the scan needs no network (only the one-time install does).
INFRA_CHECKOV_ENV := BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false PYTHONWARNINGS=ignore

.PHONY: infra-check infra-checkov-install infra-checkov-clean

infra-check: $(CHECKOV_STAMP)
	rm -f $(CHECKOV_REPORT)
	cd $(INFRA_ROOT) && $(INFRA_CHECKOV_ENV) $(CHECKOV_VENV)/bin/checkov --framework bicep \
		--directory infra --quiet --compact --skip-download \
		--output cli --output json --output-file-path console,$(CHECKOV_REPORT)
	$(CHECKOV_VENV)/bin/python $(INFRA_ROOT)/infra/checkov_summary.py $(CHECKOV_REPORT)

infra-checkov-install: $(CHECKOV_STAMP)

$(CHECKOV_STAMP):
	rm -rf $(CHECKOV_VENV)
	$(CHECKOV_PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -qq --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	touch $@

infra-checkov-clean:
	rm -rf $(CHECKOV_VENV)
