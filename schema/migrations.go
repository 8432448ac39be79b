package schema

import (
	"embed"
	"fmt"
	"io/fs"
)

//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrationFiles embed.FS

// Dialects of SQL that have migrations.
const (
	DialectSQLite   = "sqlite"
	DialectPostgres = "postgres" // PostgreSQL and CockroachDB
)

// Migrations returns the migrations of a dialect: files NNNN_name.sql at the
// root of the returned file system, applied in name order.
func Migrations(dialect string) (fs.FS, error) {
	switch dialect {
	case DialectSQLite, DialectPostgres:
		return fs.Sub(migrationFiles, "migrations/"+dialect)
	}
	return nil, fmt.Errorf("migrations: unknown SQL dialect %q", dialect)
}
