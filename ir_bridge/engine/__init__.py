"""The execution engine: compiled numpy plans for IR graphs and MDF files.

``plan.Plan`` runs an IR graph; ``mdf_plan.compile_mdf`` compiles an MDF file or
``modeci_mdf`` Model into one; ``expr.compile_expression`` is the safe compiler for MDF
expression strings; ``mdf_ops`` defines the ``MdfExpression`` op. Submodules are imported on
use, so ``import ir_bridge.engine`` stays cheap.
"""
