package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

type loginCmd struct {
	Hub           string `help:"Hub API URL, such as https://hub.example:8443." required:""`
	CAFile        string `help:"PEM file of the hub's root CA (the hub writes it to DATA_DIR/ca/root.pem)." type:"existingfile" required:""`
	User          string `help:"User name." default:"admin"`
	PasswordStdin bool   `help:"Read the password from the first line of standard input."`
}

func (c *loginCmd) Run(ctx context.Context, g *Globals) error {
	if !c.PasswordStdin {
		return errors.New("pass --password-stdin and the password on standard input (it never goes on the command line)")
	}
	line, err := bufio.NewReader(g.stdin).ReadString('\n')
	if err != nil && line == "" {
		return fmt.Errorf("read the password from standard input: %w", err)
	}
	password := strings.TrimRight(line, "\r\n")
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		return err
	}
	api, err := newAPIClientFor(c.Hub, caPEM, "")
	if err != nil {
		return err
	}
	var out struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expiresAt"`
	}
	if err := api.do(ctx, "POST", "/api/v1/login", map[string]string{"user": c.User, "password": password}, &out); err != nil {
		return err
	}
	path, err := saveClientConfig(clientConfig{Hub: api.base.String(), CACert: string(caPEM), Token: out.Token})
	if err != nil {
		return fmt.Errorf("save the login: %w", err)
	}
	fmt.Fprintf(g.stdout, "Logged in to %s as %s until %s; saved to %s\n", api.base, c.User, out.ExpiresAt.Local().Format(time.RFC3339), path)
	return nil
}
