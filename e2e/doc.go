// Package e2e holds the end-to-end tests: a real hub (in process, SQLite or
// PostgreSQL), relays as separate nxmesh processes, agents managing real
// nginx, over mutual-TLS WebSockets on loopback. It has no code of its own.
package e2e
