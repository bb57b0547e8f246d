"""Leaf utilities shared by resnet18/, resnet34/ and se_res_inception/. Nothing runs on import."""
