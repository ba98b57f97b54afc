"""Command-line front ends: consolidator, mdtail, mdstat."""
