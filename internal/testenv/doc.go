// Package testenv gives tests real infrastructure: a throwaway PostgreSQL
// cluster per test binary and nginx in a temp prefix. Only _test code
// imports it.
package testenv
