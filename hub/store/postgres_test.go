package store

import (
	"context"
	"sync"
	"testing"

	"github.com/nxmesh/nxmesh/internal/testenv"
)

// TestCommitFailureRetried: PostgreSQL's serializable isolation may fail a
// transaction at COMMIT, and tx must then rerun it, never report it done.
//
// Two transactions make a write skew: each reads both balances, and when
// they sum to 200 or more takes 200 from its own. Both read and write
// before either commits (the first attempts wait for each other), so the
// conflict can only be found at COMMIT: the first to commit wins, the
// other fails there. Rerun, it reads a sum of 0 and takes nothing. Had
// the failed COMMIT been taken for success, both would report a
// withdrawal that only one made.
func TestCommitFailureRetried(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, testenv.PostgresURL(t), nil)
	err := db.tx(ctx, true, func(q querier) error {
		if _, err := q.exec(ctx, "CREATE TABLE skew (id INT PRIMARY KEY, balance INT NOT NULL)"); err != nil {
			return err
		}
		_, err := q.exec(ctx, "INSERT INTO skew (id, balance) VALUES (1, 100), (2, 100)")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	var read, wrote sync.WaitGroup
	read.Add(2)
	wrote.Add(2)
	withdrew := make([]bool, 2)
	attempts := make([]int, 2)
	var g sync.WaitGroup
	for i := range 2 {
		g.Go(func() {
			// Should a first attempt fail early, it still passes the
			// barriers, so that the other does not wait forever.
			readDone, wroteDone := sync.OnceFunc(read.Done), sync.OnceFunc(wrote.Done)
			err := db.tx(ctx, true, func(q querier) error {
				attempts[i]++
				if attempts[i] == 1 {
					defer readDone()
					defer wroteDone()
				}
				withdrew[i] = false
				var sum int
				if err := q.queryRow(ctx, "SELECT sum(balance) FROM skew").Scan(&sum); err != nil {
					return err
				}
				if attempts[i] == 1 {
					readDone()
					read.Wait()
				}
				if sum >= 200 {
					if _, err := q.exec(ctx, "UPDATE skew SET balance = balance - 200 WHERE id = $1", i+1); err != nil {
						return err
					}
					withdrew[i] = true
				}
				if attempts[i] == 1 {
					wroteDone()
					wrote.Wait()
				}
				return nil
			})
			if err != nil {
				t.Errorf("transaction %d: %v", i+1, err)
			}
		})
	}
	g.Wait()

	var sum int
	err = db.tx(ctx, false, func(q querier) error {
		return q.queryRow(ctx, "SELECT sum(balance) FROM skew").Scan(&sum)
	})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, w := range withdrew {
		if w {
			n++
		}
	}
	if n != 1 || sum != 0 {
		t.Errorf("%d withdrawals reported (attempts %v), balance sum %d; want 1 and 0", n, attempts, sum)
	}
}
