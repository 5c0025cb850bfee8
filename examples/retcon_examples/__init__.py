"""Step code for Retcon's examples. Build it into a step-runner image to run the examples
on a real cluster; the local control plane runs it from this checkout."""
