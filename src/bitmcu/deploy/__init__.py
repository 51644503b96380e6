"""From the integer model to C: the IR, the numpy reference, code generation, the export folder
and host verification. numpy and a C compiler only, no torch."""
