// Command etcd is the etcd server built at the version kube-apiserver's own
// go.mod pins, so the local control plane never depends on a distribution's
// (older) etcd package.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
