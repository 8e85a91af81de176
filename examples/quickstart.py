"""The smallest ddpgrad program: a PyTorch script with two import lines changed.

    python examples/quickstart.py
"""

import ddpgrad as torch
import ddpgrad.nn as nn

torch.manual_seed(0)

model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 1))
loss_fn = nn.MSELoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

x = torch.randn(100, 10)
y = torch.randn(100, 1)

for step in range(1000):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    if step % 100 == 0:
        print(f"step {step:4d}  loss {loss.item():.4f}")
