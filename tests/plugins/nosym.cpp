// SPDX-License-Identifier: Apache-2.0
// Test library (e): a valid shared library without the plugin entry symbol
// (built with hidden visibility, so it exports nothing of its own).
int neox_test_not_a_plugin_entry() { return 42; }
