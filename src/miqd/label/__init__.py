"""The label stage's maths: per-image AP (det, ins) and top-1 agreement (cls) behind MMOS."""
